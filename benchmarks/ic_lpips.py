"""Batched, feature-cached IC-LPIPS against the per-image reference loop (DFMGAN's pattern).

Both run on the same images, network and device; prints JSON with both times, the speed-up and the
largest absolute difference between their cluster scores. The trunk is random (same FLOPs as the
pretrained one; no download needed).

    python benchmarks/ic_lpips.py --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import platform
import time

import torch

from acbench.metrics.ic_lpips import VARIANTS, ic_lpips, ic_lpips_reference
from acbench.metrics.lpips_features import LpipsFeatures, build_lpips
from acbench.weights import Resolution


def _max_diff(a, b) -> float:
    pairs = [(x, y) for x, y in zip(a.cluster_scores, b.cluster_scores, strict=True) if not math.isnan(x)]
    return max([abs(x - y) for x, y in pairs] + [abs(a.score - b.score)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="dfmgan")
    parser.add_argument("--generated", type=int, default=80, help="generated images of the type")
    parser.add_argument("--references", type=int, default=5, help="real reference anomalies of the type")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    variant = dataclasses.replace(VARIANTS[args.variant], size=args.size)
    model = build_lpips(variant.net, Resolution("lpips", "random")).to(args.device)
    features = LpipsFeatures(model)
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(args.references, 3, args.size, args.size, generator=g) * 2 - 1
    # generated = references with structured changes, so clusters are uneven as in real sets
    pick = torch.randint(0, args.references, (args.generated,), generator=g)
    generated = (refs[pick] * 0.7 + 0.3 * (torch.rand(args.generated, 3, args.size, args.size, generator=g) * 2 - 1))
    features(refs[:1].to(args.device))  # warm-up (allocator, kernels) shared by both paths

    def timed(fn):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    fast, fast_s = timed(lambda: ic_lpips(generated, refs, variant, features, batch_size=args.batch_size))
    loop, loop_s = timed(lambda: ic_lpips_reference(generated, refs, variant, model))
    print(json.dumps({
        "benchmark": "ic_lpips", "variant": variant.name, "net": variant.net, "size": args.size,
        "n_generated": args.generated, "n_references": args.references, "cluster_sizes": fast.cluster_sizes,
        "device": args.device, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "fast_s": round(fast_s, 3), "reference_loop_s": round(loop_s, 3), "speedup": round(loop_s / fast_s, 1),
        "score_fast": fast.score, "score_reference": loop.score, "max_abs_diff": _max_diff(fast, loop),
    }, indent=1))


if __name__ == "__main__":
    main()
