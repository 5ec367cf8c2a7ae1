"""AnoGen speed: textual-inversion steps and box-guided generation, on random weights.

Speed does not depend on weight values, so every network is random: `--model tiny` (the test base, CPU) or
`--model ldm-arch` (the full-size LDM text-to-image base, built from the architecture of AnoGen's
`txt2img-1p4B` config: UNet 320/640/1280/1280 with 1280-d cross-attention, the f8 KL autoencoder and the
32-layer 1280-d LDMBert), e.g. `--model ldm-arch --device cuda --dtype fp16`.

Measured: seconds per textual-inversion step (`--ti-batch`, AnoGen's 4, 256 px, forward + backward through the frozen
networks) and seconds per generated pair (boxes drawn on the demo's normal images, DDIM `--steps`, eta 0,
guidance 10: two UNet passes per step, `--batch-size` pairs per call). Prints one JSON object.

`--compile` adds a compiled arm: the same batches (same boxes, same noise) through the plugin's `FastSampler`
with `compile: on` (`--compile-mode`, `--compile-backend`; aot_eager for a CPU rehearsal), every batch padded
to `--batch-size` at the network calls; its first batch (the compile) is reported apart in
`compile_seconds`, its rate against the eager arm in `speedup_compiled_vs_eager`, and the largest pixel
difference from the eager pairs in `max_abs_diff_levels`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

from acbench.data.demo import write_demo
from acbench.data.mvtec import load_category
from acbench.protocol import SplitConfig
from acbench_methods.anogen import PRESETS, AnoGen, items_of, paint
from acbench_methods.anogen.embeddings import new_table
from acbench_methods.anomalydiffusion.base import DiffusionBase, tiny_base, tiny_tokenizer
from acbench_methods.anomalydiffusion.sampling import rewinding
from acbench_methods.anomalydiffusion.train import TrainConfig, train
from acbench_methods.diffusion.speed import FastSampler, SpeedOptions

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def ldm_arch_base(dtype: torch.dtype) -> DiffusionBase:
    """The LDM-1.45B architecture with random weights (the tokenizer is the small test one: ids only).

    Each network is cast to `dtype` as soon as it is built, so the peak memory is one network in fp32.
    """
    text_encoder = LDMBertModel(LDMBertConfig(vocab_size=30522, max_position_embeddings=77, encoder_layers=32,
                                              encoder_ffn_dim=5120, encoder_attention_heads=8, head_dim=64,
                                              d_model=1280)).to(dtype)
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
                                cross_attention_dim=1280, norm_num_groups=32,
                                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).to(dtype)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                        block_out_channels=(128, 256, 512, 512), norm_num_groups=32,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4).to(dtype)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return DiffusionBase("ldm-arch", vae, text_encoder, tiny_tokenizer(), unet, dict(scheduler.config), 256,
                         architecture="ldm-arch")


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def paint_batches(base: DiffusionBase, vector: torch.Tensor, batches: list, preset, device: str,
                  sampler: FastSampler | None = None) -> tuple[list[np.ndarray], list[float]]:
    """The pairs of every (normals, boxes) batch, noise from one generator (seed 0), and each batch's seconds;
    through `sampler` (compiled, padded) when given."""
    generator = torch.Generator().manual_seed(0)
    pairs, seconds = [], []
    for normals, boxes in batches:
        def painted(pad_to: int | None, normals=normals, boxes=boxes) -> np.ndarray:
            return paint(base, vector.expand(len(normals), -1, -1), normals, boxes, preset, generator, pad_to=pad_to)

        start = time.perf_counter()
        out = painted(None) if sampler is None else sampler.run(base.unet, base.vae, len(normals),
                                                                 rewinding(generator, painted))
        synchronise(device)
        seconds.append(time.perf_counter() - start)
        pairs.extend(out)
    return pairs, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "ldm-arch"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: fp16 on CUDA, else fp32")
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: 50, the paper's)")
    p.add_argument("--train-steps", type=int, default=4, help="timed textual-inversion steps (0: skip)")
    p.add_argument("--ti-batch", type=int, default=4, help="textual-inversion batch (AnoGen: 4)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="also measure generation with compile: on")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    p.add_argument("--compile-backend", default="inductor", help="aot_eager: a fast CPU rehearsal of the capture")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")]
    start = time.perf_counter()
    base = (tiny_base() if args.model == "tiny" else ldm_arch_base(dtype)).to(args.device, dtype)
    build_s = time.perf_counter() - start
    preset = replace(PRESETS["paper"], ddim_steps=args.steps or PRESETS["paper"].ddim_steps)
    with tempfile.TemporaryDirectory() as tmp:
        data = load_category(write_demo(Path(tmp) / "demo"), "brick", SplitConfig(), dataset="demo")
        items = items_of([data], base.resolution)
        cfg = TrainConfig(steps=args.train_steps, batch_size=args.ti_batch, learning_rate=preset.learning_rate,
                          save_every=10**9, masked_loss=False, augment=False,
                          mixed_precision="fp16" if dtype == torch.float16 else "no")
        table = new_table(base, [items[0].key])
        ti_s = None
        if args.train_steps > 0:
            train(base, table, lambda m, k, _m: m(k), items[:1], replace(cfg, steps=1), Path(tmp) / "warm", 0,
                  args.device)  # warm-up (kernels, allocator)
            synchronise(args.device)
            start = time.perf_counter()
            train(base, table, lambda m, k, _m: m(k), [it for it in items if it.key == items[0].key], cfg,
                  Path(tmp) / "ti", 0, args.device)
            synchronise(args.device)
            ti_s = round((time.perf_counter() - start) / args.train_steps, 4)

        method = AnoGen({"model": "tiny", "schedule": "tiny"}, weights="random")  # its box sampler only
        rng = np.random.default_rng(0)
        vector = table.vectors[0].detach().to(args.device, dtype)
        sizes = [args.batch_size] + [min(args.batch_size, args.pairs - i)  # the first batch is the warm-up
                                     for i in range(0, args.pairs, args.batch_size)]
        batches = []
        for size in sizes:
            normals = [data.normal_image(int(rng.integers(len(data.normal_train)))) for _ in range(size)]
            batches.append((normals, [method.box_for(n, data.category, "crack", rng) for n in normals]))
        eager, seconds = paint_batches(base, vector, batches, preset, args.device)
        pairs = len(eager) - sizes[0]
        gen_s = sum(seconds[1:]) / max(1, pairs)
        compiled = None
        if args.compile:
            options = SpeedOptions(compile="on", compile_mode=args.compile_mode, compile_backend=args.compile_backend)
            sampler = FastSampler(options, args.batch_size, encode_once=False)
            fast, fast_seconds = paint_batches(base, vector, batches, preset, args.device, sampler)
            compiled_s = sum(fast_seconds[1:]) / max(1, pairs)
            diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(fast, eager, strict=True))
            compiled = {"compile_seconds": round(fast_seconds[0], 2), "seconds_per_pair": round(compiled_s, 4),
                        "speedup_compiled_vs_eager": round(gen_s / compiled_s, 3), "max_abs_diff_levels": diff,
                        "facts": sampler.facts(), "mode": args.compile_mode, "backend": args.compile_backend}
    result = {
        "benchmark": "anogen_generate", "model": args.model, "device": args.device, "dtype": str(dtype).split(".")[-1],
        "random_weights": True, "resolution": base.resolution, "ddim_steps": preset.ddim_steps,
        "guidance": preset.guidance, "batch_size": args.batch_size, "pairs": pairs,
        "seconds_per_pair": round(gen_s, 4), "seconds_per_ti_step": ti_s, "ti_batch": args.ti_batch,
        "build_seconds": round(build_s, 2),
        "unet_parameters_m": round(sum(t.numel() for t in base.unet.parameters()) / 1e6, 1),
        "text_encoder_parameters_m": round(sum(t.numel() for t in base.text_encoder.parameters()) / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if args.device.startswith("cuda") else None,
        "threads": torch.get_num_threads(), "host": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    if compiled:
        result["compiled"] = compiled
    print(json.dumps(result))


if __name__ == "__main__":
    main()
