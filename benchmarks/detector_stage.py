"""Time the detector stage of the demo study: wall and CPU seconds per detector job, as JSON.

    python benchmarks/detector_stage.py [--protocol protocols/demo.yaml] [--threads N] [--device cuda]
        [--detector unet-localization] [--preset paper] [--option epochs=4] [--option data_on_device=false]
        [--method cutpaste] [--category grass]

`--option KEY=VALUE` overrides a detector option (e.g. `data_on_device=false`: the former host-side
batches, to compare with the device-resident training set on the same seed).

Synthetic sets come from the protocol's own methods (generated once into a temporary run folder);
then every detector of the protocol runs on every (method, category) like `acbench run` does.
CPU seconds beside wall seconds make numbers from a shared machine interpretable.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from acbench import registry
from acbench.engine.runner import run_study
from acbench.engine.stages import category_data
from acbench.protocol import load_protocol
from acbench.synthesis import SyntheticSet


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", default="protocols/demo.yaml")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    parser.add_argument("--detector", action="append", help="only these detectors of the protocol (repeatable)")
    parser.add_argument("--preset", default=None, help="override every detector's preset, e.g. paper")
    parser.add_argument("--option", action="append", default=[], help="detector option KEY=VALUE (repeatable)")
    parser.add_argument("--method", action="append", help="only these methods of the protocol (repeatable)")
    parser.add_argument("--category", action="append", help="only these categories (repeatable)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    protocol = load_protocol(args.protocol)
    detectors, protocol.detectors, protocol.metrics = protocol.detectors, [], []
    if args.method:
        protocol.methods = [m for m in protocol.methods if m.name in args.method]
    if args.category:
        protocol.dataset.categories = list(args.category)
    detectors = [d for d in detectors if not args.detector or d.name in args.detector]
    overrides = {k: v for o in args.option for k, v in yaml.safe_load(f"{{{o.replace('=', ': ', 1)}}}").items()}
    with tempfile.TemporaryDirectory() as tmp:
        run_study(protocol, out=Path(tmp) / "run", report=False)
        jobs, start_wall, start_cpu = [], time.time(), cpu_seconds()
        sets = sorted((Path(tmp) / "run" / "artifacts" / "generate").glob("*/*/*/index.csv"))
        for det in detectors:
            cls = registry.load("detectors", det.name)
            targets = [(p.parent, p.parent.parent.name) for p in sets] if cls.uses_synthetic else \
                [(None, c) for c in sorted({p.parent.parent.name for p in sets})]
            for folder, category in targets:
                options = cls.Options.model_validate({**det.options, **overrides})
                detector = cls(options, preset=args.preset or det.preset, weights=protocol.weights, device=args.device)
                wall, cpu = time.time(), cpu_seconds()
                synthetic = SyntheticSet(folder) if folder else None
                detector.run(category_data(protocol, category), synthetic, Path(tmp) / "work" / str(len(jobs)), 0)
                jobs.append({"detector": det.label, "set": folder.parent.parent.name if folder else "none",
                             "category": category, "wall_s": round(time.time() - wall, 2),
                             "cpu_s": round(cpu_seconds() - cpu, 2)})
                print(json.dumps(jobs[-1]), file=sys.stderr, flush=True)
        total = {"wall_s": round(time.time() - start_wall, 1), "cpu_s": round(cpu_seconds() - start_cpu, 1),
                 "torch_threads": torch.get_num_threads(), "jobs": len(jobs)}
    print(json.dumps({"total": total, "jobs": jobs}, indent=1))


if __name__ == "__main__":
    main()
