"""SGA, the semantic guided adapter: decoupled cross-attention fed by the CSM feature.

Built on diffusers' IP-Adapter machinery rather than patched UNet code:

- the feature projection (CSM feature -> Linear to 1024 -> IP-Adapter `ImageProjection` to
  `num_tokens` tokens of the UNet's cross-attention width, with LayerNorm) is installed as the UNet's
  `encoder_hid_proj` (a `MultiIPAdapterImageProjection`), so the UNet turns
  `added_cond_kwargs={"image_embeds": [features[:, None]]}` into semantic tokens itself, and
  `StableDiffusionInpaintPipeline(..., ip_adapter_image_embeds=...)` drives it unchanged;
- every cross-attention (`attn2`) gets an `IPAdapterAttnProcessor2_0`:
  out = Attn(Q, K_text, V_text) + scale * Attn(Q, K'_sg, V'_sg), with new K'/V' projections.

Trainable: the two projections and all K'/V'. The adapter is saved as one safetensors file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection
from safetensors.torch import load_file, save_file
from torch import nn

from acbench.errors import UserError


class SemanticProjection(nn.Module):
    """CSM feature -> `num_tokens` semantic tokens (the reference's BlipProj + IP-Adapter ImageProj)."""

    def __init__(self, feature_dim: int, proj_dim: int, cross_attention_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, proj_dim)
        self.image_proj = ImageProjection(proj_dim, cross_attention_dim, num_tokens)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_proj(self.feature_proj(features.to(self.feature_proj.weight.dtype)))


def _cross_attention_names(unet: UNet2DConditionModel) -> list[str]:
    return [name for name in unet.attn_processors if not name.endswith("attn1.processor")]


def _hidden_size(unet: UNet2DConditionModel, name: str) -> int:
    channels = unet.config.block_out_channels
    if name.startswith("mid_block"):
        return channels[-1]
    if name.startswith("up_blocks"):
        return list(reversed(channels))[int(name[len("up_blocks.")])]
    return channels[int(name[len("down_blocks.")])]


class SemanticGuidedAdapter(nn.Module):
    """The trainable part of AnomalyControl: projection + one decoupled processor per cross-attention."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        feature_dim: int,
        proj_dim: int = 1024,
        num_tokens: int = 4,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        cad = unet.config.cross_attention_dim
        self.projection = SemanticProjection(feature_dim, proj_dim, cad, num_tokens)
        self.layer_names = _cross_attention_names(unet)
        self.layers = nn.ModuleList(
            IPAdapterAttnProcessor2_0(_hidden_size(unet, n), cad, num_tokens=(num_tokens,), scale=scale)
            for n in self.layer_names
        )
        self._init_from_text_projections(unet)

    def _init_from_text_projections(self, unet: UNet2DConditionModel) -> None:
        """K'/V' start as copies of the text K/V (as in the reference training script)."""
        modules = dict(unet.named_modules())
        with torch.no_grad():
            for name, layer in zip(self.layer_names, self.layers):
                attn = modules[name.removesuffix(".processor")]
                layer.to_k_ip[0].weight.copy_(attn.to_k.weight)
                layer.to_v_ip[0].weight.copy_(attn.to_v.weight)

    def set_scale(self, scale: float) -> None:
        """lambda, the weight of the semantic branch (0 disables it exactly)."""
        for layer in self.layers:
            layer.scale = [float(scale)]

    def attach(self, unet: UNet2DConditionModel) -> None:
        """Install the processors and the projection into `unet` (its own weights stay untouched)."""
        processors = {}
        for name in unet.attn_processors:
            processors[name] = AttnProcessor2_0()
        processors.update(zip(self.layer_names, self.layers))
        unet.set_attn_processor(processors)
        unet.encoder_hid_proj = MultiIPAdapterImageProjection([self.projection])
        unet.config.encoder_hid_dim_type = "ip_image_proj"

    @staticmethod
    def detach(unet: UNet2DConditionModel) -> None:
        """Restore plain SD-inpainting."""
        unet.set_attn_processor(AttnProcessor2_0())
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None

    def load_ip_adapter(self, path: str | Path) -> None:
        """Initialise projection and K'/V' from an IP-Adapter SD1.5 checkpoint (.safetensors or .bin)."""
        path = Path(path)
        if path.suffix == ".safetensors":
            flat = load_file(path)
        else:
            nested = torch.load(path, map_location="cpu", weights_only=True)
            flat = {f"{group}.{k}": v for group, sd in nested.items() for k, v in sd.items()}
        mapping = {
            "projection.image_proj.image_embeds.weight": "image_proj.proj.weight",
            "projection.image_proj.image_embeds.bias": "image_proj.proj.bias",
            "projection.image_proj.norm.weight": "image_proj.norm.weight",
            "projection.image_proj.norm.bias": "image_proj.norm.bias",
        }
        for i in range(len(self.layers)):  # IP-Adapter numbers all processors; cross-attentions are odd
            for kv in ("k", "v"):
                mapping[f"layers.{i}.to_{kv}_ip.0.weight"] = f"ip_adapter.{2 * i + 1}.to_{kv}_ip.weight"
        own = self.state_dict()
        missing = [src for src in mapping.values() if src not in flat]
        bad = [dst for dst, src in mapping.items() if src in flat and flat[src].shape != own[dst].shape]
        if missing or bad:
            raise UserError(
                f"{path}: not an IP-Adapter checkpoint for this UNet "
                f"({'missing ' + missing[0] if missing else 'shape mismatch at ' + bad[0]})"
            )
        with torch.no_grad():
            for dst, src in mapping.items():
                own[dst].copy_(flat[src])

    def save(self, path: str | Path) -> None:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(path))

    def load(self, path: str | Path) -> None:
        try:
            tensors = load_file(str(path))
        except (OSError, FileNotFoundError) as exc:
            raise UserError(
                f"{path}: cannot read the AnomalyControl adapter ({exc.__class__.__name__})"
            ) from None
        try:
            self.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise UserError(
                f"{path}: adapter does not match this model preset ({str(exc).splitlines()[0]})"
            ) from None
