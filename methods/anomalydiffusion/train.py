"""Training the learned tokens (and the spatial encoder) with the frozen base, through accelerate.

Loss (original `ddpm.py::p_losses`): epsilon prediction; for the anomaly embedding the prediction and
the target are multiplied by the latent-grid mask before the mean over all latent elements, so only the
anomaly region trains the tokens (not renormalised by the mask area); the mask tokens use the plain loss.
Augmentation (original `--data_enhance`): random horizontal / vertical flips and a rotation within
+-20 degrees, applied to the image and its mask together.

Every step draws its batch, noise and timesteps from a generator seeded by (seed, step), so a run that
resumes from a saved state (`accelerate` `save_state` / `load_state`, every `save_every` steps) takes
the same steps as one that never stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torchvision.transforms.v2 import functional as TF

from acbench_methods.diffusion.train_state import resume_state, save_state
from acbench_methods.anomalydiffusion.base import DiffusionBase
from acbench_methods.anomalydiffusion.sampling import latent_mask

log = logging.getLogger(__name__)

# Textual-inversion templates (a subset of the original's imagenet_templates_small).
TEMPLATES = ["a photo of a *", "a rendering of a *", "a cropped photo of the *", "the photo of a *",
             "a photo of a clean *", "a close-up photo of a *", "a bright photo of the *", "a good photo of a *"]


@dataclass
class TrainItem:
    image: torch.Tensor  # [3, R, R] in [-1, 1]
    mask: torch.Tensor  # [1, R, R] in {0, 1}
    key: str


@dataclass
class TrainConfig:
    steps: int
    batch_size: int
    learning_rate: float
    save_every: int
    masked_loss: bool
    augment: bool = True
    mixed_precision: str = "no"


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def make_batch(items: list[TrainItem], size: int, gen: torch.Generator, augment: bool):
    picks = torch.randint(len(items), (size,), generator=gen).tolist()
    images, masks = [], []
    for i in picks:
        image, mask = items[i].image, items[i].mask
        if augment:
            flips = torch.rand(2, generator=gen)
            angle = float(torch.empty(1).uniform_(-20, 20, generator=gen))
            if flips[0] < 0.5:
                image, mask = image.flip(-1), mask.flip(-1)
            if flips[1] < 0.5:
                image, mask = image.flip(-2), mask.flip(-2)
            image = TF.rotate(image, angle, interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
            mask = TF.rotate(mask, angle, interpolation=TF.InterpolationMode.NEAREST)
        images.append(image)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks), [items[i].key for i in picks]


VectorsFn = Callable[[nn.Module, list[str], torch.Tensor], torch.Tensor]


def diffusion_loss(base: DiffusionBase, module: nn.Module, vectors_of: VectorsFn, images: torch.Tensor,
                   masks: torch.Tensor, keys: list[str], gen: torch.Generator, masked: bool) -> torch.Tensor:
    latents = base.encode(images)
    noise = torch.randn(latents.shape, generator=gen).to(latents)
    t = torch.randint(0, base.noise_scheduler.config.num_train_timesteps, (len(latents),), generator=gen)
    t = t.to(latents.device)
    noisy = base.noise_scheduler.add_noise(latents, noise, t)
    template_ids = torch.randint(len(TEMPLATES), (len(keys),), generator=gen).tolist()
    vectors = vectors_of(module, keys, masks.to(latents.device))
    prompts = [base.prompt_ids(TEMPLATES[i], vectors.shape[1]) for i in template_ids]
    ids, slots = torch.stack([p[0] for p in prompts]), torch.stack([p[1] for p in prompts])
    states = base.text_states(ids, slots, vectors.to(base.dtype))
    eps = base.unet(noisy, t, encoder_hidden_states=states).sample.float()
    error = eps - noise.float()
    if masked:
        error = error * latent_mask(masks, latents.shape[-1]).to(error)
    return (error**2).mean()


def train(base: DiffusionBase, module: nn.Module, vectors_of: VectorsFn, items: list[TrainItem], cfg: TrainConfig,
          state_dir: Path, seed: int, device: str, progress=None) -> list[float]:
    """Optimise `module` (only it has gradients); resume from `state_dir` when a saved state is there."""
    accelerator = Accelerator(cpu=not device.startswith("cuda"),
                              mixed_precision=cfg.mixed_precision if device.startswith("cuda") else "no")
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.learning_rate)
    module, optimizer = accelerator.prepare(module, optimizer)
    start = resume_state(accelerator, state_dir, "AnomalyDiffusion")
    losses: list[float] = []
    module.train()
    for step in range(start, cfg.steps):
        gen = step_generator(seed, step)
        images, masks, keys = make_batch(items, cfg.batch_size, gen, cfg.augment)
        with accelerator.autocast():
            loss = diffusion_loss(base, module, vectors_of, images, masks, keys, gen, cfg.masked_loss)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_state(accelerator, state_dir, step + 1)
        if progress is not None:
            progress(step + 1, cfg.steps)
    module.eval()
    return losses


@torch.no_grad()
def evaluation_loss(base: DiffusionBase, module: nn.Module, vectors_of: VectorsFn, items: list[TrainItem],
                    masked: bool, seed: int = 12345, repeats: int = 4) -> float:
    """The loss on every item with fixed noise and timesteps (a comparable number before / after training)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.stack([it.image for it in items])
    masks = torch.stack([it.mask for it in items])
    keys = [it.key for it in items]
    return float(sum(diffusion_loss(base, module, vectors_of, images, masks, keys, gen, masked)
                     for _ in range(repeats)) / repeats)
