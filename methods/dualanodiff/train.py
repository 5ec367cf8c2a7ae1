"""Training one (category, type) adapter: epsilon-MSE over both branches, resumable, through accelerate.

As the official `train_dreambooth_lora.py` (re-implemented from its description): every sample is a
real anomaly image resized to the model resolution, flipped horizontally and vertically with
p = 0.5 each (not for `cable`), and its anomaly part = the image where the ground-truth mask is set,
black elsewhere. The whole image goes through the blend branch with the blend prompt, the anomaly part
through the fg branch with the fg prompt; both branches share the timestep and get independent
noise; the loss is the MSE of the predicted noise over both. The frozen UNet, VAE and text encoder
carry the trainable `DualAdapter` (LoRAs, cross-branch attention, the text encoder's LoRA, and for
`bcm` the reference MLP and gate; its reference is a normal training image of the category).

Every random choice of step k (batch, flips, latent sample, noise, timestep, reference image) comes
from a generator seeded by (seed, k), so a run resumed from a saved state (`accelerate`
`save_state`/`load_state`) takes the same steps as one that never stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler

from acbench_methods.diffusion.train_state import resume_state, save_state
from acbench_methods.diffusion import InpaintComponents
from acbench_methods.dualanodiff.attention import BRANCHES, DualAdapter

log = logging.getLogger(__name__)

NO_FLIP_CATEGORIES = ("cable",)  # the official loader does not flip cable (its layout is not symmetric)


@dataclass
class TrainData:
    """Images (N x 3 x R x R in [-1, 1]), masks (N x 1 x R x R in {0, 1}), normals for `bcm`."""

    images: torch.Tensor
    masks: torch.Tensor
    normals: torch.Tensor | None = None
    flip: bool = True

    @classmethod
    def from_arrays(cls, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                    normals: Sequence[np.ndarray] | None = None, flip: bool = True) -> TrainData:
        m = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
        return cls(to_tensor(images), m, to_tensor(normals) if normals else None, flip)


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 H x W x 3 images of one size -> N x 3 x H x W in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@dataclass
class TrainReport:
    steps: int
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def draw_batch(data: TrainData, batch_size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Whole images and anomaly parts (black outside the mask), flipped together; a reference normal."""
    idx = torch.randint(len(data.images), (batch_size,), generator=gen)
    images, masks = data.images[idx].clone(), data.masks[idx].clone()
    flips = torch.rand(batch_size, 2, generator=gen) < 0.5
    if data.flip:
        for i in range(batch_size):
            dims = [d for d, f in ((-1, flips[i, 0]), (-2, flips[i, 1])) if f]
            if dims:
                images[i], masks[i] = images[i].flip(dims), masks[i].flip(dims)
    fg = torch.where(masks > 0.5, images, torch.full_like(images, -1.0))
    batch = {"pairs": torch.stack([images, fg], dim=1).flatten(0, 1)}  # rows: (image, branch)
    if data.normals is not None:
        batch["normals"] = data.normals[torch.randint(len(data.normals), (batch_size,), generator=gen)]
    return batch


def encode_prompts(components: InpaintComponents, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder states of the prompts (differentiable: the text LoRA may be attached)."""
    tok = components.tokenizer(list(prompts), padding="max_length", truncation=True, return_tensors="pt",
                               max_length=components.tokenizer.model_max_length)
    return components.text_encoder(tok.input_ids.to(components.text_encoder.device))[0]


def dual_unet(components: InpaintComponents, adapter: DualAdapter, latents: torch.Tensor, t: torch.Tensor,
              text: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """One UNet call on (image, branch) rows; with a reference (`bcm`), first the reference pass.

    `reference`: noised normal latents, one row per image pair; `t`: one timestep per row.
    """
    unet = components.unet
    if reference is None or not adapter.bcm:
        return unet(latents, t, encoder_hidden_states=text).sample
    try:
        with adapter.reference("write"):
            unet(reference, t[::BRANCHES], encoder_hidden_states=text[::BRANCHES])
        with adapter.reference("read"):
            return unet(latents, t, encoder_hidden_states=text).sample
    finally:
        adapter.clear_reference()


def training_loss(components: InpaintComponents, adapter: DualAdapter, noise_scheduler: DDPMScheduler,
                  batch: dict[str, torch.Tensor], prompts: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    device, dtype = components.unet.device, components.unet.dtype
    vae, scale = components.vae, components.vae.config.scaling_factor
    with torch.no_grad():
        latents = vae.encode(batch["pairs"].to(device, vae.dtype)).latent_dist.sample(gen) * scale
    pairs = latents.shape[0] // BRANCHES
    noise = torch.randn(latents.shape, generator=gen).to(device, latents.dtype)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (pairs,), generator=gen)
    t = t.repeat_interleave(BRANCHES).to(device)  # the same timestep for both branches of a pair
    noisy = noise_scheduler.add_noise(latents, noise, t)
    text = encode_prompts(components, prompts).to(dtype).repeat(pairs, 1, 1)
    reference = None
    if adapter.bcm and "normals" in batch:
        with torch.no_grad():
            ref = vae.encode(batch["normals"].to(device, vae.dtype)).latent_dist.sample(gen) * scale
        ref_noise = torch.randn(ref.shape, generator=gen).to(device, ref.dtype)
        reference = noise_scheduler.add_noise(ref, ref_noise, t[::BRANCHES])
    pred = dual_unet(components, adapter, noisy.to(dtype), t, text, reference)
    return F.mse_loss(pred.float(), noise.float())


def train_adapter(components: InpaintComponents, adapter: DualAdapter, data: TrainData, prompts: Sequence[str], *,
                  steps: int, batch_size: int, learning_rate: float, seed: int, state_dir: Path,
                  checkpoint_every: int, device: str = "cpu", mixed_precision: str = "no") -> TrainReport:
    """Optimise the adapter (only it has gradients); resume from `state_dir` when a state is saved there."""
    cuda = str(device).startswith("cuda")
    accelerator = Accelerator(cpu=not cuda, mixed_precision=mixed_precision if cuda else "no")
    components.to(accelerator.device)
    adapter.to(accelerator.device, torch.float32).requires_grad_(True)
    # diffusers' DreamBooth-LoRA defaults: AdamW (0.9, 0.999), weight decay 1e-2, eps 1e-8; constant LR.
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=learning_rate, betas=(0.9, 0.999),
                                  weight_decay=1e-2, eps=1e-8)
    adapter, optimizer = accelerator.prepare(adapter, optimizer)
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
    report = TrainReport(steps=steps, resumed_from=resume_state(accelerator, state_dir, "DualAnoDiff"))
    adapter.train()
    for step in range(report.resumed_from, steps):
        gen = step_generator(seed, step)
        batch = draw_batch(data, batch_size, gen)
        with accelerator.autocast():
            loss = training_loss(components, adapter, noise_scheduler, batch, prompts, gen)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        report.losses.append(float(loss.detach()))
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save_state(accelerator, state_dir, step + 1)
    adapter.eval().requires_grad_(False)
    return report


