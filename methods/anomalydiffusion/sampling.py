"""Sampling: anomaly pairs by latent inpainting of a normal image, and masks from the mask tokens.

Pairs (original `generate_with_mask.py`): DDIM with stochastic eta; before every step the latent is
re-composed as z <- m * z + (1 - m) * q(z0_normal, t), so only the masked region is generated; the
prompt is the first template with the anomaly + spatial tokens; AAR optionally re-weights the
cross-attention. The caller composites the decoded image back onto the normal pixels.

Compiled networks (`pad_to`, see `methods/diffusion/speed.py`): the noise is drawn for the batch's n real
rows from the CPU generator exactly as without it; only what the UNet and the VAE receive is padded to
`pad_to` rows (copies of the last row) and their outputs cut back to n, so a compiled network sees one
shape whatever n is. `pad_to=None` is the plain path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch.nn import functional as F

from acbench_methods.anomalydiffusion.attention import AARState, aar_weights, install_aar
from acbench_methods.anomalydiffusion.base import DiffusionBase
from acbench_methods.diffusion.speed import pad_rows

GENERATION_TEMPLATE = "a photo of a *"
T = TypeVar("T")


@dataclass
class AARConfig:
    enabled: bool = False
    reference: str = "x0_pred"  # or "latent"
    mode: str = "scale"  # or "shift"
    max_weight: float = 1.5
    include_bos: bool = False


def latent_mask(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel masks [B, 1, H, W] -> binary latent-grid masks (bilinear, threshold 0.5, as the original)."""
    return (F.interpolate(masks.float(), size=(size, size), mode="bilinear", align_corners=False) > 0.5).float()


def conditioning(base: DiffusionBase, vectors: torch.Tensor, template: str = GENERATION_TEMPLATE):
    ids, slots = base.prompt_ids(template, vectors.shape[1])
    batch = vectors.shape[0]
    ids, slots = ids.expand(batch, -1), slots.expand(batch, -1)
    return base.text_states(ids, slots, vectors.to(base.device, base.dtype)), slots


def token_span(slots: torch.Tensor, include_bos: bool) -> torch.Tensor:
    span = slots.clone()
    if include_bos:
        span[:, 0] = True
    return span


class Networks:
    """The UNet and VAE calls for a batch of n rows: with `pad_to`, inputs padded to that many rows (and
    contiguous: the empty prompt's expanded states would be a second compiled graph by their strides) and
    outputs cut back to n; without, the base's own calls."""

    def __init__(self, base: DiffusionBase, n: int, pad_to: int | None = None) -> None:
        self.base, self.n, self.pad_to = base, n, pad_to

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.pad_to is None else pad_rows(x, self.pad_to).contiguous()

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.pad_to is None else x[: self.n]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.cut(self.base.encode(self.pad(images)))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.cut(self.base.decode(self.pad(latents)))

    def unet(self, z: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.cut(self.base.unet(self.pad(z), t, encoder_hidden_states=self.pad(states)).sample)


@torch.no_grad()
def inpaint(base: DiffusionBase, vectors: torch.Tensor, normals: torch.Tensor, masks: torch.Tensor, steps: int,
            eta: float, guidance: float, aar: AARConfig, generator: torch.Generator, *,
            template: str = GENERATION_TEMPLATE, latent_masks: torch.Tensor | None = None, final_blend: bool = True,
            on_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
            pad_to: int | None = None) -> torch.Tensor:
    """Decoded images in [-1, 1] with an anomaly generated inside `masks` of `normals` ([-1, 1], [B,3,R,R]).

    `latent_masks` replaces the bilinear downsampling of `masks`; `final_blend=False` decodes the last
    latent as it is (no re-composite with the clean normal latent); `on_step(t, z, noised_normal)` sees
    every blended latent before the UNet does; `pad_to`: network inputs padded to that many rows (module
    docstring).
    """
    device = base.device
    nets = Networks(base, len(normals), pad_to)
    z0 = nets.encode(normals)
    m = (latent_mask(masks, z0.shape[-1]) if latent_masks is None else latent_masks).to(device, z0.dtype)
    cond, slots = conditioning(base, vectors, template)
    uncond = base.empty_prompt_states(len(z0)) if guidance != 1.0 else None
    span = nets.pad(token_span(slots, aar.include_bos)).to(device)  # on the device: no host input to a graph
    state = AARState(span=span, mode=aar.mode)  # type: ignore[arg-type]
    install_aar(base.unet, state)
    # Padded (compiled) with AAR on, every UNet call gets a weight map: ones where eager has none (the first
    # x0_pred step, the unconditional branch), the same attention. A None there would be a second compiled
    # graph (Dynamo guards on it). Without AAR the weights stay None: plain SDPA attention.
    idle = torch.ones(pad_to, 1, *z0.shape[-2:], device=device) if pad_to is not None and aar.enabled else None
    sampler = base.sampler()
    sampler.set_timesteps(steps, device=device)
    z = _randn(z0.shape, generator, device, z0.dtype)
    x0_pred = None
    for t in sampler.timesteps:
        noised_normal = base.noise_scheduler.add_noise(z0, _randn(z0.shape, generator, device, z0.dtype), t[None])
        z = m * z + (1 - m) * noised_normal
        if on_step is not None:
            on_step(t, z, noised_normal)
        reference = z if aar.reference == "latent" else x0_pred
        state.weights = (nets.pad(aar_weights(reference, z0, m, int(t), steps, aar.max_weight))
                         if aar.enabled and reference is not None else idle)
        eps = _predict(nets, z, t, cond, uncond, guidance, state, idle)
        out = sampler.step(eps, t, z, eta=eta,
                           variance_noise=_randn(z0.shape, generator, device, z0.dtype) if eta > 0 else None)
        z, x0_pred = out.prev_sample, out.pred_original_sample
    state.weights = None
    return nets.decode(m * z + (1 - m) * z0 if final_blend else z)


def _predict(nets: Networks, z, t, cond, uncond, guidance, state: AARState, idle: torch.Tensor | None = None):
    if uncond is None:
        return nets.unet(z, t, cond)
    weights = state.weights
    state.weights = idle  # AAR acts on the conditional branch only (the unconditional one has no tokens)
    eps_uncond = nets.unet(z, t, uncond)
    state.weights = weights
    eps_cond = nets.unet(z, t, cond)
    return eps_uncond + guidance * (eps_cond - eps_uncond)


def rewinding(generator: torch.Generator, paint: Callable[[int | None], T]) -> Callable[[int | None], T]:
    """`paint(pad_to)` that first puts `generator` back to its state now: when a compiled first batch fails,
    `FastSampler`'s eager retry draws the noise the failed attempt drew, i.e. the eager images."""
    start = generator.get_state()

    def rewound(pad_to: int | None) -> T:
        generator.set_state(start)
        return paint(pad_to)

    return rewound


def _randn(shape, generator: torch.Generator, device, dtype) -> torch.Tensor:
    """Noise drawn on the CPU generator, so a seed gives the same numbers on every device."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)


@torch.no_grad()
def sample_mask_images(base: DiffusionBase, vectors: torch.Tensor, steps: int, guidance: float,
                       generator: torch.Generator, pad_to: int | None = None) -> torch.Tensor:
    """Text-to-image with the mask tokens (DDIM, eta 0, classifier-free guidance); images in [0, 1].
    `pad_to`: network inputs padded to that many rows, as in `inpaint`."""
    device = base.device
    state = AARState()  # no weights: plain attention
    install_aar(base.unet, state)
    cond, _ = conditioning(base, vectors)
    uncond = base.empty_prompt_states(len(vectors)) if guidance != 1.0 else None
    sampler = base.sampler()
    sampler.set_timesteps(steps, device=device)
    shape = (len(vectors), base.unet.config.in_channels, base.latent_size, base.latent_size)
    z = _randn(shape, generator, device, base.dtype)
    nets = Networks(base, len(z), pad_to)
    for t in sampler.timesteps:
        z = sampler.step(_predict(nets, z, t, cond, uncond, guidance, state), t, z, eta=0.0).prev_sample
    return (nets.decode(z).float() + 1) / 2


def binarise_masks(images: torch.Tensor, threshold: float, border_fraction: float = 1 / 3) -> list[torch.Tensor | None]:
    """RGB mean > threshold -> bool masks; None for an empty mask or one touching the border too much
    (any border row or column with more than `border_fraction` of its pixels set), as the original."""
    out: list[torch.Tensor | None] = []
    for image in images:
        mask = image.mean(dim=0) > threshold
        h, w = mask.shape
        borders = (mask[0].sum() > w * border_fraction, mask[-1].sum() > w * border_fraction,
                   mask[:, 0].sum() > h * border_fraction, mask[:, -1].sum() > h * border_fraction)
        out.append(None if not mask.any() or any(bool(b) for b in borders) else mask.cpu())
    return out
