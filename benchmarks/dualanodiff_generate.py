"""DualAnoDiff speed: two-branch batched generation vs plain SD-1.5, and the training step.

- `dual_batched`: the `dualanodiff` sampling loop (both branches of `--batch-size` images per UNet call,
  classifier-free guidance, the reference pass too with `--variant bcm`), over `--images` images;
- `plain_sd15`: diffusers' StableDiffusionPipeline over the same frozen networks without the adapter,
  batched the same way: the floor (DualAnoDiff denoises two images per output, so about 2x is expected);
- `train_step`: seconds per optimiser step of the adapter at `--train-batch` (forward + backward).

Speed does not depend on weight values, so every network is random: `--model tiny` (small configs,
CPU) or `--model sd15-arch` (SD-1.5 built from its published configs, LoRA rank 32 on every attention
layer plus the cross-branch attention), e.g. `--model sd15-arch --device cuda --dtype fp16`.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline

from acbench_methods.diffusion.text2img import build_text2img_components
from acbench_methods.dualanodiff.attention import DualAdapter
from acbench_methods.dualanodiff.sampling import sample_pairs
from acbench_methods.dualanodiff.train import TrainData, draw_batch, step_generator, train_adapter, training_loss

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PROMPTS = ("a vfx with sks", "sks")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "sd15-arch"], default="tiny")
    p.add_argument("--variant", choices=["default", "bcm"], default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: fp16 on CUDA, else fp32")
    p.add_argument("--images", type=int, default=None, help="default: 16 tiny, 8 sd15-arch")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: 10 tiny, 100 sd15-arch)")
    p.add_argument("--guidance", type=float, default=2.5)
    p.add_argument("--rank", type=int, default=None, help="default: 4 tiny, 32 sd15-arch")
    p.add_argument("--resolution", type=int, default=None, help="default: 64 tiny, 512 sd15-arch")
    p.add_argument("--train-steps", type=int, default=3, help="timed optimiser steps (0: skip)")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the minimum time is kept")
    return p.parse_args()


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    synchronise(device)
    start = time.perf_counter()
    fn()
    synchronise(device)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = args.model == "tiny"
    device = args.device
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float16 if device.startswith("cuda") else torch.float32)
    images = args.images or (16 if tiny else 8)
    steps = args.steps or (10 if tiny else 100)
    rank = args.rank or (4 if tiny else 32)
    size = args.resolution or (64 if tiny else 512)
    bcm = args.variant == "bcm"

    start = time.perf_counter()
    components = build_text2img_components(args.model, "random", seed=0, dtype=dtype).to(device)
    unet = components.unet
    torch.manual_seed(0)
    adapter = DualAdapter(unet, rank, bcm, components.text_encoder).to(device, dtype)
    build_s = time.perf_counter() - start
    params = {
        "unet": sum(p.numel() for p in unet.parameters()),
        "adapter": sum(p.numel() for p in adapter.parameters()),
        "adapter_lora": sum(p.numel() for n, p in adapter.named_parameters() if ".lora." in n or n.startswith("text.")),
        "adapter_cross_branch": sum(p.numel() for n, p in adapter.named_parameters() if ".cross_branch." in n),
    }
    rng = np.random.default_rng(0)
    normals = None
    if bcm:
        normals = torch.from_numpy(rng.uniform(-1, 1, (args.batch_size, 3, size, size)).astype(np.float32))
    pipe = StableDiffusionPipeline(components.vae, components.text_encoder, components.tokenizer, unet,
                                   components.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def dual() -> None:
        adapter.attach(unet)
        for first in range(0, images, args.batch_size):
            seeds = list(range(first, min(images, first + args.batch_size)))
            sample_pairs(components, adapter, PROMPTS, seeds, size, steps, args.guidance,
                         None if normals is None else normals[: len(seeds)])
        adapter.detach(unet)

    def plain() -> None:  # `dual` detached the adapter: the UNet has diffusers' default processors
        for first in range(0, images, args.batch_size):
            n = min(args.batch_size, images - first)
            gens = [torch.Generator().manual_seed(first + i) for i in range(n)]
            pipe(prompt=[PROMPTS[0]] * n, height=size, width=size, num_inference_steps=steps,
                 guidance_scale=args.guidance, generator=gens, output_type="np")

    runs: dict[str, list[float]] = {"dual_batched": [], "plain_sd15": []}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for _ in range(args.repeats):
            runs["dual_batched"].append(timed(dual, device))
            runs["plain_sd15"].append(timed(plain, device))
    peak_generate = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None

    train = None
    if args.train_steps > 0:  # adapter in fp32 under autocast on CUDA, as `train_adapter` runs it
        data_rng = np.random.default_rng(1)
        pics = [data_rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(4)]
        masks = [np.zeros((size, size), bool) for _ in range(4)]
        for m in masks:
            m[size // 4 : size // 2, size // 4 : size // 2] = True
        data = TrainData.from_arrays(pics, masks, pics if bcm else None)
        adapter.attach(unet)
        mixed = "fp16" if dtype == torch.float16 and device.startswith("cuda") else "no"
        with tempfile.TemporaryDirectory() as tmp:
            train_adapter(components, adapter, data, PROMPTS, steps=1, batch_size=args.train_batch,
                          learning_rate=2e-5, seed=0, state_dir=Path(tmp), checkpoint_every=10**9,
                          device=device, mixed_precision=mixed)  # warm-up (allocations, autotuning)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            seconds = timed(lambda: train_adapter(
                components, adapter, data, PROMPTS, steps=args.train_steps, batch_size=args.train_batch,
                learning_rate=2e-5, seed=1, state_dir=Path(tmp) / "b", checkpoint_every=10**9, device=device,
                mixed_precision=mixed), device)
        train = {"batch": args.train_batch, "seconds_per_step": seconds / args.train_steps,
                 "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None}
        # one loss evaluation shows the training path runs the reference pass too under bcm
        gen = step_generator(0, 0)
        with torch.no_grad():
            loss = training_loss(components, adapter, DDPMScheduler.from_config(components.scheduler.config),
                                 draw_batch(data, 2, gen), PROMPTS, gen)
        train["loss_finite"] = bool(torch.isfinite(loss))

    best = {k: min(v) for k, v in runs.items()}
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
        "model": args.model, "variant": args.variant, "dtype": str(dtype).removeprefix("torch."),
        "resolution": size, "steps": steps, "guidance": args.guidance, "rank": rank,
        "images": images, "batch_size": args.batch_size, "repeats": args.repeats, "build_s": build_s,
        "parameters": params,
        "images_per_s": {k: images / v for k, v in best.items()},
        "dual_over_plain_time": best["dual_batched"] / best["plain_sd15"],
        "peak_memory_mib_generate": peak_generate, "train": train,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
