"""AnomalyDiffusion throughput on the demo dataset: fit and generation time, as JSON.

    python benchmarks/anomalydiffusion_throughput.py [--model tiny] [--schedule tiny] [--device cpu] [--count 8]

With `--model ldm --schedule fast --device cuda` (weights in the hub cache or `--weights-path`) it measures
the real base; the default measures the tiny random base on CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from acbench.data.demo import write_demo
from acbench.data.mvtec import load_category
from acbench.protocol import SplitConfig
from acbench.synthesis import GenerationRequest
from acbench_methods.anomalydiffusion import AnomalyDiffusion


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--schedule", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--weights-path", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        root = write_demo(Path(tmp) / "demo")
        data = load_category(root, "brick", SplitConfig(), dataset="demo")
        method = AnomalyDiffusion({"model": args.model, "schedule": args.schedule,
                                   "weights_path": args.weights_path}, weights="pretrained-or-random")
        start = time.perf_counter()
        method.fit([data], Path(tmp) / "fit", seed=0, device=args.device)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        samples = list(method.generate(data, GenerationRequest("crack", args.count, 0, fit_dir=Path(tmp) / "fit",
                                                               device=args.device)))
        gen_s = time.perf_counter() - start
    steps = {k: len(v) for k, v in method.losses.items()}
    print(json.dumps({"model": args.model, "schedule": args.schedule, "device": args.device,
                      "fit_seconds": round(fit_s, 3), "train_steps": steps,
                      "seconds_per_train_step": round(fit_s / max(1, sum(steps.values())), 4),
                      "pairs": len(samples), "seconds_per_pair": round(gen_s / max(1, len(samples)), 4),
                      "random_weights": method.provenance()["random_weights"]}))


if __name__ == "__main__":
    main()
