"""Adapter training: epsilon-MSE on SD-inpainting with the SGA adapter as the only trainable part.

Frozen networks make two shortcuts exact: the VAE posterior (mean, std) of every training image and
masked image, and the text embeddings of every caption, are computed once; each step then draws its
latents from the stored posterior as the reference does from the VAE. Every random choice of step k
(batch, noise, timestep, condition dropout, latent sample) comes from a generator seeded by
(seed, k), so resuming from a checkpoint continues exactly as an uninterrupted run would.
accelerate provides device placement, mixed precision, gradient accumulation and multi-GPU (DDP).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from acbench_methods.anomalycontrol.sga import SemanticGuidedAdapter
from acbench_methods.diffusion import InpaintComponents

log = logging.getLogger(__name__)

DROPOUT = 0.05  # feature only / text only / both, each (IP-Adapter style, for classifier-free guidance)


@dataclass
class TrainingSet:
    """Everything a step needs, precomputed from the frozen networks (CPU tensors)."""

    latent_mean: torch.Tensor  # N x 4 x h x w
    latent_std: torch.Tensor
    masked_mean: torch.Tensor
    masked_std: torch.Tensor
    mask_latent: torch.Tensor  # N x 1 x h x w
    text: torch.Tensor  # N x L x d
    empty_text: torch.Tensor  # 1 x L x d
    features: torch.Tensor  # N x feature_dim

    def __len__(self) -> int:
        return self.latent_mean.shape[0]


@dataclass
class TrainReport:
    steps: int
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)


class DenoiserWithAdapter(nn.Module):
    """The frozen UNet carrying the adapter: one module for accelerate to prepare (and DDP to wrap)."""

    def __init__(self, unet, adapter: SemanticGuidedAdapter) -> None:
        super().__init__()
        self.unet = unet
        self.adapter = adapter

    def forward(self, model_input, timesteps, text, features):
        return self.unet(
            model_input,
            timesteps,
            encoder_hidden_states=text,
            added_cond_kwargs={"image_embeds": [features[:, None]]},
        ).sample


def _images_to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def prepare_training_set(
    components: InpaintComponents,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    captions: Sequence[str],
    features: torch.Tensor,
    batch_size: int = 8,
    paint_threshold: float = 0.5,
) -> TrainingSet:
    """Encode images, masked images and captions once with the frozen networks.

    Masks are binary or soft (values in [0, 1]); the masked image is blanked (0 in the VAE's [-1, 1]
    range) where the mask is >= `paint_threshold`, and the mask channel keeps the mask's own values.
    """
    vae, device = components.vae, components.vae.device
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("lm", "ls", "mm", "ms", "mask")}
    for start in range(0, len(images), batch_size):
        x = _images_to_tensor(images[start : start + batch_size]).to(device)
        m = torch.from_numpy(np.stack(masks[start : start + batch_size]).astype(np.float32))[:, None].to(
            device
        )
        latent = vae.encode(x.to(vae.dtype)).latent_dist
        masked = vae.encode((x * (m < paint_threshold)).to(vae.dtype)).latent_dist
        for key, value in (("lm", latent.mean), ("ls", latent.std), ("mm", masked.mean), ("ms", masked.std)):
            parts[key].append(value.float().cpu())
        parts["mask"].append(F.interpolate(m, size=latent.mean.shape[-2:]).cpu())
    return TrainingSet(
        *(torch.cat(parts[k]) for k in ("lm", "ls", "mm", "ms", "mask")),
        text=encode_text(components, captions),
        empty_text=encode_text(components, [""]),
        features=features.float().cpu(),
    )


@torch.no_grad()
def encode_text(components: InpaintComponents, captions: Sequence[str]) -> torch.Tensor:
    tok = components.tokenizer(
        list(captions),
        padding="max_length",
        max_length=components.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return components.text_encoder(tok.input_ids.to(components.text_encoder.device))[0].float().cpu()


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def draw_batch(
    data: TrainingSet,
    components: InpaintComponents,
    batch_size: int,
    seed: int,
    micro_step: int,
    dropout: bool = True,
    legacy_mask_range: bool = False,
) -> dict[str, torch.Tensor]:
    """The inputs of micro-batch `micro_step` (CPU), fully determined by (seed, micro_step).

    The mask channel is {0, 1} (keep / paint), as the inpainting UNet was pretrained and as the pipeline
    feeds it at inference; `legacy_mask_range` gives the released script's -1 / +1 instead (its mask went
    through the image normalisation), for exact parity with an adapter trained by that script.
    """
    gen = _step_generator(seed, micro_step)
    idx = torch.randperm(len(data), generator=gen)[: min(batch_size, len(data))]
    latents = data.latent_mean[idx] + data.latent_std[idx] * torch.randn(
        data.latent_mean[idx].shape, generator=gen
    )
    masked = data.masked_mean[idx] + data.masked_std[idx] * torch.randn(
        data.masked_mean[idx].shape, generator=gen
    )
    scale = components.vae.config.scaling_factor
    latents, masked = latents * scale, masked * scale
    noise = torch.randn(latents.shape, generator=gen)
    timesteps = torch.randint(0, components.scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
    text, features = data.text[idx].clone(), data.features[idx].clone()
    if dropout:
        u = torch.rand(len(idx), generator=gen)
        drop_feature = (u < DROPOUT) | (u >= 1 - DROPOUT)
        drop_text = ((u >= DROPOUT) & (u < 2 * DROPOUT)) | (u >= 1 - DROPOUT)
        features[drop_feature] = 0
        text[drop_text] = data.empty_text[0]
    noisy = components.scheduler.add_noise(latents, noise, timesteps)
    mask = data.mask_latent[idx] * 2 - 1 if legacy_mask_range else data.mask_latent[idx]
    model_input = torch.cat([noisy, mask, masked], dim=1)
    return {
        "model_input": model_input,
        "timesteps": timesteps,
        "text": text,
        "features": features,
        "noise": noise,
    }


def denoising_loss(module: nn.Module, batch: dict[str, torch.Tensor], device, dtype=None) -> torch.Tensor:
    dtype = dtype or torch.float32
    pred = module(
        batch["model_input"].to(device, dtype),
        batch["timesteps"].to(device),
        batch["text"].to(device, dtype),
        batch["features"].to(device),
    )
    return F.mse_loss(pred.float(), batch["noise"].to(device).float())


def _latest_checkpoint(folder: Path) -> Path | None:
    done = [p for p in folder.glob("step-*") if (p / "state.json").is_file()] if folder.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def train_adapter(
    components: InpaintComponents,
    adapter: SemanticGuidedAdapter,
    data: TrainingSet,
    *,
    steps: int,
    batch_size: int,
    grad_accumulation: int,
    learning_rate: float,
    seed: int,
    checkpoint_dir: Path,
    checkpoint_every: int,
    device: str = "cpu",
    mixed_precision: str = "no",
    train_scale: float = 0.5,
    keep_checkpoints: int = 2,
    legacy_mask_range: bool = False,
) -> TrainReport:
    """Train the attached adapter for `steps` optimiser updates, resuming from `checkpoint_dir`."""
    inference_dtype = next(adapter.parameters()).dtype
    _reset_accelerate_state(mixed_precision)
    accelerator = Accelerator(
        mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accumulation, cpu=device == "cpu"
    )
    adapter.to(accelerator.device, torch.float32).requires_grad_(True).set_scale(train_scale)
    components.to(accelerator.device)
    module = DenoiserWithAdapter(components.unet, adapter)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=learning_rate, weight_decay=1e-2)
    module, optimizer = accelerator.prepare(module, optimizer)
    report = TrainReport(steps=steps)
    latest = _latest_checkpoint(checkpoint_dir)
    if latest is not None:
        adapter.load(latest / "adapter.safetensors")
        optimizer.load_state_dict(torch.load(latest / "optimizer.pt", map_location="cpu", weights_only=True))
        report.resumed_from = json.loads((latest / "state.json").read_text())["step"]
        log.info("resuming adapter training from %s", latest)
    micro_per_step = grad_accumulation * accelerator.num_processes
    module.train()
    for step in range(report.resumed_from, steps):
        for k in range(grad_accumulation):
            micro = step * micro_per_step + k * accelerator.num_processes + accelerator.process_index
            batch = draw_batch(data, components, batch_size, seed, micro, legacy_mask_range=legacy_mask_range)
            with accelerator.accumulate(module), accelerator.autocast():
                loss = denoising_loss(module, batch, accelerator.device, components.unet.dtype)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
        report.losses.append(float(loss.detach()))
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            _save_checkpoint(accelerator, adapter, optimizer, checkpoint_dir, step + 1, keep_checkpoints)
    module.eval()
    adapter.requires_grad_(False).to(dtype=inference_dtype)  # trained in fp32, used like the frozen UNet
    return report


def _reset_accelerate_state(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another precision;
    a process that fits several adapters (tests, notebooks, one worker running many jobs) needs a reset."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", mixed_precision)) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def _save_checkpoint(
    accelerator: Accelerator, adapter: SemanticGuidedAdapter, optimizer, folder: Path, step: int, keep: int
) -> None:
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    target = folder / f"step-{step}"
    tmp = folder / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    adapter.save(tmp / "adapter.safetensors")
    accelerator.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    for old in sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
