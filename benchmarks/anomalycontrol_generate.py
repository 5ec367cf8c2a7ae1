"""AnomalyControl generation speed: batched vs the reference's per-image loop vs plain SD-inpainting.

Three ways to paint the same N defects with the same number of sampling steps:

- `batched`: networks and adapter built once, CSM features computed once per reference, `--batch-size`
  images per pipeline call (what the `anomalycontrol` plugin does);
- `per_image_loop`: the released code's pattern: for every image, rebuild the adapter (new processors,
  load the adapter file, attach), build a pipeline and generate that one image;
- `plain_sd_inpainting`: diffusers' StableDiffusionInpaintPipeline without the adapter, batched the
  same way: the floor.

Speed does not depend on weight values, so every network is random: `--model tiny` (small configs,
CPU) or `--model sd15-arch` (SD-1.5-inpainting and BLIP-2 ViT-g built from their published configs),
e.g. `--model sd15-arch --device cuda --dtype fp16`. Prints one JSON object.

The eager arms run with the plugin option `compile: off`. `--compile` adds two arms measured after the
eager ones in the same run: `batched_compiled` (the plugin's own path with `compile: on`: UNet and VAE
compiled on the first batch, every batch padded to `--batch-size`, prompts encoded once; `compiled.facts`
says whether the UNet really ran compiled or fell back to eager) and `plain_compiled` (the same compiled
networks without the adapter, padded, prompts encoded once). Compile time is reported apart
(`compile_seconds`, the first full batch of each arm) and the ratios to the eager plain pipeline and to
the per-image loop are printed (targets: >= 1.6x and >= 10x).
"""

from __future__ import annotations

import argparse
import dataclasses
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

from acbench_methods.anomalycontrol.cache import Reference
from acbench_methods.anomalycontrol.model import AnomalyControlModel
from acbench_methods.anomalycontrol.options import AnomalyControlOptions
from acbench_methods.anomalycontrol.sga import SemanticGuidedAdapter
from acbench_methods.diffusion import sample_inpaint
from acbench_methods.diffusion.speed import PromptEmbeddings

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "sd15-arch"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: fp16 on CUDA, else fp32")
    p.add_argument("--images", type=int, default=None, help="images for the batched and plain runs")
    p.add_argument("--loop-images", type=int, default=None, help="images for the per-image loop")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: 10 tiny, 50 sd15-arch)")
    p.add_argument("--references", type=int, default=4)
    p.add_argument("--resolution", type=int, default=None, help="override the preset's size (smoke runs)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the minimum time is kept")
    p.add_argument("--compile", action="store_true", help="also measure the compiled, padded arms")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    p.add_argument("--compile-backend", default="inductor", help="aot_eager: a fast CPU rehearsal of the capture")
    return p.parse_args()


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


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


CPU_TIMES: dict[str, list[float]] = {}


def timed(device: str, fn, label: str | None = None) -> float:
    """Wall seconds of fn(); also records this process's CPU seconds under `label`, which on a shared
    CPU machine measures the work itself, unaffected by other processes competing for the cores."""
    synchronise(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    synchronise(device)
    if label is not None:
        CPU_TIMES.setdefault(label, []).append(time.process_time() - cpu_start)
    return time.perf_counter() - start


def batched_run(model: AnomalyControlModel, images, masks, features, seeds, batch: int) -> None:
    for s in range(0, len(images), batch):  # (compiled: the model's sampler pads a short last batch)
        part = slice(s, s + batch)
        model.generate(list(images[part]), list(masks[part]), ["a crack"] * len(images[part]), list(seeds[part]),
                       features[part])


def per_image_loop(model: AnomalyControlModel, adapter_file: Path, images, masks, features, seeds) -> None:
    unet, preset = model.components.unet, model.preset
    dtype = model.components.unet.dtype
    for image, mask, feature, seed in zip(images, masks, features, seeds):
        adapter = SemanticGuidedAdapter(unet, model.csm.feature_dim, preset.proj_dim, preset.num_tokens)
        adapter.load(adapter_file)
        adapter.to(model.device, dtype).attach(unet)
        model.adapter = adapter
        model._pipeline = None  # the reference builds its pipeline wrapper per call as well
        model.generate([image], [mask], ["a crack"], [seed], feature[None])


def plain_run(model: AnomalyControlModel, images, masks, seeds, batch: int, fast: bool = False) -> None:
    pipe, size = model.pipeline(), model.preset.resolution
    speed = {"pad_to": batch, "embeddings": PROMPTS} if fast else {}
    for s in range(0, len(images), batch):
        n = len(images[s : s + batch])
        sample_inpaint(
            pipe,
            images[s : s + batch],
            masks[s : s + batch],
            ["a crack"] * n,
            seeds[s : s + batch],
            steps=model.inference_steps,
            strength=model.options.strength,
            guidance=model.options.guidance,
            negative_prompt=model.options.negative_prompt,
            **speed,
        )
    assert size == images[0].shape[0]


PROMPTS = PromptEmbeddings()


def compiled_arms(args, model: AnomalyControlModel, adapter, images, masks, features, seeds) -> dict:
    """The compiled, padded arms: first full batch = compile (reported apart), then the minimum of repeats."""
    b = args.batch_size
    # the plugin's option: the model's sampler compiles the networks in place on its first batch
    model.options = model.options.model_copy(
        update={"compile": "on", "compile_mode": args.compile_mode, "compile_backend": args.compile_backend}
    )
    model._sampler = None

    def with_adapter(n: int) -> None:
        batched_run(model, images[:n], masks[:n], features[:n], seeds[:n], b)

    def plain(n: int) -> None:
        plain_run(model, images[:n], masks[:n], seeds[:n], b, fast=True)

    out: dict = {"seconds": {}, "compile_seconds": {}}
    for name, use, run in (("batched_compiled", adapter, with_adapter), ("plain_compiled", None, plain)):
        use_adapter(model, use)
        out["compile_seconds"][name] = round(timed(args.device, lambda run=run: run(min(b, len(images)))), 2)
        out["seconds"][name] = [round(timed(args.device, lambda run=run: run(len(images)), name), 3)
                                for _ in range(args.repeats)]
        if use is not None:
            out["facts"] = model.speed_facts()
    return out


def unet_forward_seconds(
    model: AnomalyControlModel, adapter: SemanticGuidedAdapter, batch: int, repeats: int
):
    """Minimum time of one UNet forward (CFG batch) without and with the adapter: its own cost."""
    unet, dtype, device = model.components.unet, model.components.unet.dtype, model.device
    latent = model.preset.resolution // model.components.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2 * batch, 9, latent, latent, generator=g).to(device, dtype)
    text = torch.randn(
        2 * batch, model.components.tokenizer.model_max_length, unet.config.cross_attention_dim
    )
    text, t = text.to(device, dtype), torch.full((2 * batch,), 500, device=device)
    features = torch.randn(2 * batch, 1, model.csm.feature_dim, generator=g).to(device)
    out = {"plain": [], "adapter": []}
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first round warms up
            use_adapter(model, None)
            out["plain"].append(timed(device, lambda: unet(sample, t, encoder_hidden_states=text)))
            use_adapter(model, adapter)
            out["adapter"].append(
                timed(device, lambda: unet(sample, t, text, added_cond_kwargs={"image_embeds": [features]}))
            )
    return {k: round(min(v[1:]), 4) for k, v in out.items()}


def use_adapter(model: AnomalyControlModel, adapter: SemanticGuidedAdapter | None) -> None:
    """Attach `adapter` (or plain SD-inpainting for None) and drop the cached pipeline."""
    SemanticGuidedAdapter.detach(model.components.unet)
    if adapter is not None:
        adapter.attach(model.components.unet)
    model.adapter = adapter
    model._pipeline = None


def peak_memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = args.model == "tiny"
    steps = args.steps or (10 if tiny else 50)
    n_images = args.images or (32 if tiny else 16)
    n_loop = args.loop_images or (8 if tiny else 4)
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float16 if args.device.startswith("cuda") else None)
    cache = tempfile.mkdtemp(prefix="acbench-bench-")
    options = AnomalyControlOptions(model="tiny", schedule="tiny", steps=steps, cache_dir=cache, compile="off",
                                    batch_size=args.batch_size)
    torch.manual_seed(0)
    t_build = time.perf_counter()
    model = AnomalyControlModel.build(options, "random", args.device, architecture=args.model, dtype=dtype)
    t_build = time.perf_counter() - t_build
    if args.resolution:
        model.preset = dataclasses.replace(model.preset, resolution=args.resolution)
    size = model.preset.resolution
    images, masks = targets(n_images, size)
    ref_images, ref_masks = targets(args.references, size, seed=1)
    refs = [Reference(i, m, "the object has a crack") for i, m in zip(ref_images, ref_masks)]
    t_csm = timed(args.device, lambda: model.reference_features(refs))
    features = model.reference_features(refs)[[i % len(refs) for i in range(n_images)]]
    seeds = list(range(n_images))
    adapter_file = Path(cache) / "adapter.safetensors"
    model.adapter.save(adapter_file)

    adapter = model.adapter
    times: dict[str, list[float]] = {"batched": [], "per_image_loop": [], "plain_sd_inpainting": []}
    mem_batched = 0.0
    loop = slice(0, n_loop)
    for repeat in range(args.repeats):  # interleaved repeats, minimum kept: robust to a busy machine
        use_adapter(model, adapter)
        if repeat == 0:
            batched_run(model, images[:2], masks[:2], features[:2], seeds[:2], 2)  # warm-up
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
        times["batched"].append(
            timed(
                args.device,
                lambda: batched_run(model, images, masks, features, seeds, args.batch_size),
                "batched",
            )
        )
        mem_batched = max(mem_batched, peak_memory_mib(args.device))
        times["per_image_loop"].append(
            timed(
                args.device,
                lambda: per_image_loop(
                    model, adapter_file, images[loop], masks[loop], features[loop], seeds[loop]
                ),
                "per_image_loop",
            )
        )
        use_adapter(model, None)
        if repeat == 0:
            plain_run(model, images[:2], masks[:2], seeds[:2], 2)  # warm-up
        times["plain_sd_inpainting"].append(
            timed(
                args.device,
                lambda: plain_run(model, images, masks, seeds, args.batch_size),
                "plain_sd_inpainting",
            )
        )
    t_batched, t_loop, t_plain = (min(times[k]) for k in ("batched", "per_image_loop", "plain_sd_inpainting"))

    rate = {
        "batched": n_images / t_batched,
        "per_image_loop": n_loop / t_loop,
        "plain_sd_inpainting": n_images / t_plain,
    }
    unet_seconds = unet_forward_seconds(model, adapter, args.batch_size, args.repeats)
    compiled = compiled_arms(args, model, adapter, images, masks, features, seeds) if args.compile else None
    if compiled:
        for name, secs in compiled["seconds"].items():
            rate[name] = n_images / min(secs)
    counts = {"batched": n_images, "per_image_loop": n_loop, "plain_sd_inpainting": n_images}
    cpu_rate = {k: counts[k] / min(CPU_TIMES[k]) for k in counts}
    result = {
        "benchmark": "anomalycontrol_generate",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.model,
        "random_weights": True,
        "device": args.device,
        "device_name": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "dtype": str(model.components.unet.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "resolution": size,
        "steps": steps,
        "strength": options.strength,
        "guidance": options.guidance,
        "batch_size": args.batch_size,
        "images": n_images,
        "loop_images": n_loop,
        "repeats": args.repeats,
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "build_seconds": round(t_build, 3),
        "csm_seconds_per_reference": round(t_csm / len(refs), 4),
        "images_per_second": {k: round(v, 3) for k, v in rate.items()},
        "cpu_images_per_second": {k: round(v, 3) for k, v in cpu_rate.items()},
        "cpu_speedup_vs_per_image_loop": round(cpu_rate["batched"] / cpu_rate["per_image_loop"], 2),
        "cpu_time_ratio_vs_plain_sd_inpainting": round(
            cpu_rate["plain_sd_inpainting"] / cpu_rate["batched"], 3
        ),
        "speedup_vs_per_image_loop": round(rate["batched"] / rate["per_image_loop"], 2),
        "time_ratio_vs_plain_sd_inpainting": round(rate["plain_sd_inpainting"] / rate["batched"], 3),
        "unet_forward_seconds": unet_seconds,
        "unet_forward_ratio_adapter_vs_plain": round(unet_seconds["adapter"] / unet_seconds["plain"], 3),
        "peak_memory_mib_batched": round(mem_batched, 1),
        "peak_memory_kind": "torch.cuda.max_memory_allocated"
        if args.device.startswith("cuda")
        else "process maxrss",
    }
    if compiled:
        result["compiled"] = {
            **compiled,
            "mode": args.compile_mode,
            "backend": args.compile_backend,
            "images_per_second": {k: round(rate[k], 3) for k in compiled["seconds"]},
            "batched_compiled_vs_plain_sd_inpainting": round(rate["batched_compiled"] / rate["plain_sd_inpainting"], 3),
            "batched_compiled_vs_per_image_loop": round(rate["batched_compiled"] / rate["per_image_loop"], 2),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
