"""Adaptive Attention Re-weighting (AAR): stronger cross-attention on the learned tokens where the
anomaly is still weak inside its mask.

At each sampling step a weight map is computed on the latent grid (`aar_weights`):
- the mask is dilated by r_t = floor((t + 100) * 8 / 1000) latent pixels at 32x32 (16 for a 50-step
  schedule, as in the original code; scaled to other latent sizes), shrinking as t -> 0;
- d = channel mean of the squared difference between a reference and the normal image's latent inside
  the dilated mask. The reference is the denoised estimate x0 of the previous step (`x0_pred`, the
  paper's formulation) or the current noisy latent z_t (`latent`, what the released code computes);
- w = 1/d there (zeros guarded), rescaled so that its sum equals the dilated area, clamped to
  [1, max_weight]; w = 1 outside (and everywhere when the sum is 0).

`AdaptiveCrossAttnProcessor` applies w in every cross-attention layer to the pre-softmax logits of the
learned-token span: `scale` multiplies the logits (paper and code; note it pushes a negative logit further
down), `shift` adds log(w), i.e. multiplies the unnormalised attention, which always raises the span's
share. The original code also scales token 0 (BOS) by an indexing quirk: `include_bos` reproduces it.
Without a weight map the processor is plain scaled-dot-product attention (SDPA on GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch.nn import functional as F


@dataclass
class AARState:
    """Shared by every cross-attention processor of one U-Net during one sampling step."""

    weights: torch.Tensor | None = None  # [B, 1, h, w] on the latent grid
    span: torch.Tensor | None = None  # [B, L] bool: the learned-token positions
    mode: Literal["scale", "shift"] = "scale"
    record: bool = False
    recorded: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (probs, weights) per layer


def dilation_radius(t: int, num_steps: int, latent_size: int) -> int:
    factor = 16 if num_steps == 50 else 8
    return int(math.floor((int(t) + 100) * factor / 1000 * latent_size / 32))


def aar_weights(reference: torch.Tensor, normal_latent: torch.Tensor, mask: torch.Tensor, t: int, num_steps: int,
                max_weight: float = 1.5) -> torch.Tensor:
    """The weight map [B, 1, h, w] (see the module docstring); `mask` is the binary latent-grid mask."""
    reference, normal_latent, mask = reference.float(), normal_latent.float(), mask.float()  # 1/d overflows fp16
    r = dilation_radius(t, num_steps, mask.shape[-1])
    dilated = F.max_pool2d(mask.float(), 2 * r + 1, stride=1, padding=r) if r > 0 else mask.float()
    d = ((dilated * (reference - normal_latent)) ** 2).mean(dim=1, keepdim=True)
    inv = torch.where((dilated > 0) & (d > 0), 1.0 / d.clamp_min(1e-12), torch.zeros_like(d))
    total = inv.sum(dim=(1, 2, 3), keepdim=True)
    area = dilated.sum(dim=(1, 2, 3), keepdim=True)
    scaled = torch.where(total > 0, inv * area / total.clamp_min(1e-12), torch.ones_like(inv))
    inside = (dilated > 0) & (total > 0)
    return torch.where(inside, scaled.clamp(1.0, max_weight), torch.ones_like(scaled))


class AdaptiveCrossAttnProcessor:
    """Cross-attention with the AAR weight map on the learned-token logits (see the module docstring)."""

    def __init__(self, state: AARState) -> None:
        self.state = state
        self.plain = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs):
        state = self.state
        if encoder_hidden_states is None or (state.weights is None and not state.record) or hidden_states.ndim != 3:
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        residual = hidden_states
        batch, n_pixels, _ = hidden_states.shape
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        logits = torch.bmm(query, key.transpose(1, 2)) * attn.scale  # [B*heads, N, L]
        weights = self._pixel_weights(batch, n_pixels, attn.heads, logits)
        if weights is not None:
            span = state.span.to(logits.device).repeat_interleave(attn.heads, dim=0)[:, None, :]
            reweighted = logits * weights if state.mode == "scale" else logits + torch.log(weights)
            logits = torch.where(span, reweighted, logits)
        probs = logits.softmax(dim=-1)
        if state.record:
            state.recorded.append((probs.detach(), weights.detach() if weights is not None else None))
        out = attn.batch_to_head_dim(torch.bmm(probs.to(value.dtype), value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _pixel_weights(self, batch: int, n_pixels: int, heads: int, logits: torch.Tensor) -> torch.Tensor | None:
        weights = self.state.weights
        if weights is None:
            return None
        h, w = weights.shape[-2:]
        stride = round(math.sqrt(h * w / n_pixels))
        resized = F.interpolate(weights.float(), size=(h // stride, w // stride), mode="nearest")
        return resized.flatten(1).repeat_interleave(heads, dim=0)[:, :, None].to(logits.dtype)


def install_aar(unet, state: AARState) -> None:
    """AAR on every cross-attention layer (attn2), plain SDPA on self-attention."""
    processors = {name: AdaptiveCrossAttnProcessor(state) if ".attn2." in name else AttnProcessor2_0()
                  for name in unet.attn_processors}
    unet.set_attn_processor(processors)
