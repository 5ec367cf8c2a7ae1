"""Does bf16 autocast change what `unet-localization` measures? Same jobs with and without it, several seeds.

`unet-localization` runs its forward passes under bf16 autocast on CUDA (the loss and softmax in
float32). This trains the same (method, category) job for each seed twice — autocast as shipped, and
autocast switched off (float32 throughout) — and prints JSON with every metric per seed and arm, the
largest bf16-vs-fp32 difference, and the seed spread (max - min over seeds) of each arm. bf16 counts as
equivalent where the first is within the second.

    python benchmarks/detector_bf16.py --device cuda --preset paper --seeds 0 1 2 --option epochs=20

On the CPU both arms are float32 (autocast is CUDA-only in the detector): the run only rehearses the script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import yaml

from acbench import registry
from acbench.detectors import unet
from acbench.engine.runner import run_study
from acbench.engine.stages import category_data
from acbench.protocol import load_protocol
from acbench.synthesis import SyntheticSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="protocols/demo.yaml")
    parser.add_argument("--method", default="perlin", help="the synthesis method that makes the training pairs")
    parser.add_argument("--category", default="grass")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--option", action="append", default=[], help="detector option KEY=VALUE (repeatable)")
    args = parser.parse_args()
    overrides = {k: v for o in args.option for k, v in yaml.safe_load(f"{{{o.replace('=', ': ', 1)}}}").items()}
    protocol = load_protocol(args.protocol)
    protocol.methods = [m for m in protocol.methods if m.name == args.method][:1]
    protocol.dataset.categories = [args.category]
    protocol.detectors, protocol.metrics = [], []
    cls = registry.load("detectors", "unet-localization")
    shipped = unet._autocast
    arms = {"bf16": shipped, "fp32": lambda device: contextlib.nullcontext()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_study(protocol, out=Path(tmp) / "run", report=False)
        folder = next((Path(tmp) / "run" / "artifacts" / "generate").glob(f"*/{args.category}/*/index.csv")).parent
        data = category_data(protocol, args.category)
        for seed in args.seeds:
            for arm, autocast in arms.items():
                unet._autocast = autocast
                try:
                    detector = cls(cls.Options.model_validate(overrides), preset=args.preset, weights="random",
                                   device=args.device)
                    start = time.time()
                    values = detector.run(data, SyntheticSet(folder), Path(tmp) / f"{arm}-{seed}", seed)
                finally:
                    unet._autocast = shipped
                rows.append({"seed": seed, "arm": arm, "seconds": round(time.time() - start, 1),
                             **{v.metric: v.value for v in values if v.value == v.value}})
    metrics = sorted({k for r in rows for k in r} - {"seed", "arm", "seconds"})
    by = {(r["arm"], r["seed"]): r for r in rows}
    diff = {m: max(abs(by["bf16", s][m] - by["fp32", s][m]) for s in args.seeds) for m in metrics}
    spread = {arm: {m: max(by[arm, s][m] for s in args.seeds) - min(by[arm, s][m] for s in args.seeds)
                    for m in metrics} for arm in arms}
    print(json.dumps({"benchmark": "detector_bf16", "device": args.device, "preset": args.preset,
                      "method": args.method, "category": args.category, "options": overrides,
                      "autocast_active": args.device.startswith("cuda"), "rows": rows,
                      "max_bf16_vs_fp32": diff, "seed_spread": spread,
                      "within_seed_spread": {m: diff[m] <= min(spread["bf16"][m], spread["fp32"][m]) for m in metrics}},
                     indent=1))


if __name__ == "__main__":
    main()
