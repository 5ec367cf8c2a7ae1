"""sd-inpaint generation speed: the plugin's batched painting vs one image per pipeline call.

Both paint the same N defects (same images, masks, prompts, seeds, steps) with the painter the
`sd-inpaint` plugin uses (sampling, resize, exact composite): `batched` sends `--batch-size` images
per pipeline call, `per_image` one. Speed does not depend on weight values, so every network is
random: `--preset tiny` (small configs, CPU), `--preset sd15` (SD-1.5-inpainting built from its
published configs: 512 px, 50 steps, CFG 7.5) or `--preset diag` (SDXL-inpainting: 1024 px, 30 steps,
CFG 20; DIAG's mask crop paints image by image in diffusers, so there batched = per image), e.g.
`--preset sd15 --device cuda`. Prints one JSON object.

Both arms run eager (`compile: off`). `--compile` adds an arm `batched_compiled`: the same painting with
the plugin option `compile: on` (a second painter, same random weights), its first batch (the compile)
reported apart in `compile_seconds`, its ratio to `batched` in `speedup_compiled_vs_batched`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from datetime import UTC, datetime

import numpy as np
import torch

from acbench_methods.sdinpaint import SDInpaint


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=["tiny", "sd15", "diag"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                   help="network dtype (auto: fp16 on CUDA, fp32 elsewhere)")
    p.add_argument("--images", type=int, default=None, help="images per variant (default 16 tiny, 8 otherwise)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="override the preset's sampling steps")
    p.add_argument("--resolution", type=int, default=None, help="override the preset's size (smoke runs)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the minimum time is kept")
    p.add_argument("--compile", action="store_true", help="also measure the plugin with compile: on")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    p.add_argument("--compile-backend", default="inductor", help="aot_eager: a fast CPU rehearsal of the capture")
    return p.parse_args()


def targets(n: int, size: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    masks = []
    for _ in range(n):
        m = np.zeros((size, size), bool)
        y, x = rng.integers(0, size // 2, size=2)
        m[y : y + size // 3, x : x + size // 4] = True
        masks.append(m)
    return images, masks


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of fn()."""
    synchronise(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronise(device)
    return time.perf_counter() - start, time.process_time() - cpu


def peak_memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {"preset": args.preset, "mixed_precision": args.precision, "batch_size": args.batch_size,
               "compile": "off"}
    if args.steps:
        options["steps"] = args.steps
    if args.resolution:
        options["resolution"] = args.resolution
    method = SDInpaint(options, weights="random")
    preset = method.preset
    torch.manual_seed(0)
    t_build = time.perf_counter()
    painter = method.painter(args.device)
    t_build = time.perf_counter() - t_build
    n = args.images or (16 if args.preset == "tiny" else 8)
    size = preset.resolution
    images, masks = targets(n, size)
    prompts, seeds = ["a photo of a bottle with a broken large"] * n, list(range(n))

    def run(batch: int, painter=painter) -> None:
        for s in range(0, n, batch):
            painter.paint(images[s : s + batch], masks[s : s + batch], prompts[s : s + batch], seeds[s : s + batch])

    run(min(2, n))  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    wall: dict[str, list[float]] = {"batched": [], "per_image": []}
    cpu: dict[str, list[float]] = {"batched": [], "per_image": []}
    mem = 0.0
    for _ in range(args.repeats):  # interleaved: robust to a busy machine
        for name, batch in (("batched", args.batch_size), ("per_image", 1)):
            w, c = timed(args.device, lambda b=batch: run(b))
            wall[name].append(w)
            cpu[name].append(c)
            if name == "batched":
                mem = max(mem, peak_memory_mib(args.device))
    compiled = None
    if args.compile:
        fast = SDInpaint({**options, "compile": "on", "compile_mode": args.compile_mode,
                          "compile_backend": args.compile_backend}, weights="random")
        torch.manual_seed(0)
        fast_painter = fast.painter(args.device)
        k = min(n, args.batch_size)  # the first batch compiles
        first, _ = timed(args.device, lambda: fast_painter.paint(images[:k], masks[:k], prompts[:k], seeds[:k]))
        wall["batched_compiled"], cpu["batched_compiled"] = [], []
        for _ in range(args.repeats):
            w, c = timed(args.device, lambda: run(args.batch_size, fast_painter))
            wall["batched_compiled"].append(w)
            cpu["batched_compiled"].append(c)
        compiled = {"compile_seconds": round(first, 2), "facts": fast.provenance()["generation_speed"],
                    "mode": args.compile_mode, "backend": args.compile_backend}
    rate = {k: n / min(v) for k, v in wall.items()}
    unet = painter.pipe.unet
    result = {
        "benchmark": "sd_inpaint_generate",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": args.preset,
        "architecture": painter.source,
        "random_weights": painter.random_weights,
        "unet_parameters_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "dtype": str(unet.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "resolution": size,
        "steps": preset.steps,
        "strength": preset.strength,
        "guidance": preset.guidance,
        "padding_mask_crop": preset.padding_mask_crop,
        "batch_size": args.batch_size,
        "images": n,
        "repeats": args.repeats,
        "build_seconds": round(t_build, 3),
        "seconds": {k: [round(t, 3) for t in v] for k, v in wall.items()},
        "images_per_second": {k: round(v, 3) for k, v in rate.items()},
        "cpu_images_per_second": {k: round(n / min(v), 3) for k, v in cpu.items()},
        "speedup_batched_vs_per_image": round(rate["batched"] / rate["per_image"], 2),
        "peak_memory_mib_batched": round(mem, 1),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if args.device.startswith("cuda")
        else "process maxrss",
    }
    if compiled:
        result["compiled"] = {**compiled,
                              "speedup_compiled_vs_batched": round(rate["batched_compiled"] / rate["batched"], 3)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
