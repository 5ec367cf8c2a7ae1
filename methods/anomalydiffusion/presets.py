"""Training and sampling schedules (`paper`, `fast`, `tiny`) and the base models (`ldm`, `sd15`, `tiny`).

`paper` follows the public code of AnomalyDiffusion (sjtuplayer/anomalydiffusion): 4 anomaly + 4 spatial
tokens, 16 mask tokens, Adam at 5e-3 x batch 4 (the code's `--scale_lr`: 0.02), 300k iterations (the
paper's count; the config allows 1M), mask tokens 30,001 steps, pairs by DDIM 200 steps with eta 1 and
no guidance, masks by DDIM 100 steps, guidance 5, RGB mean > 0.8. `fast` keeps the architecture and
shortens training and sampling for quick studies; `tiny` is for tests and the CPU demo.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Schedule = Literal["paper", "fast", "tiny"]
ModelName = Literal["ldm", "sd15", "tiny"]


@dataclass(frozen=True)
class ModelSpec:
    hub_id: str | None
    layout: Literal["ldm", "sd"]  # subfolder names: ldm = bert/vqvae, sd = text_encoder/vae
    resolution: int


MODELS: dict[str, ModelSpec] = {
    "ldm": ModelSpec("CompVis/ldm-text2im-large-256", "ldm", 256),
    "sd15": ModelSpec("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd", 512),
    "tiny": ModelSpec(None, "ldm", 64),
}


@dataclass(frozen=True)
class Preset:
    anomaly_tokens: int
    spatial_tokens: int
    mask_tokens: int
    encoder_widths: tuple[int, ...]
    train_steps: int
    mask_train_steps: int
    batch_size: int
    learning_rate: float
    save_every: int
    ddim_steps: int
    eta: float
    guidance: float
    mask_ddim_steps: int
    mask_guidance: float
    mask_threshold: float


PRESETS: dict[str, Preset] = {
    "paper": Preset(anomaly_tokens=4, spatial_tokens=4, mask_tokens=16, encoder_widths=(64, 128, 256, 512),
                    train_steps=300_000, mask_train_steps=30_001, batch_size=4, learning_rate=0.02,
                    save_every=5_000, ddim_steps=200, eta=1.0, guidance=1.0, mask_ddim_steps=100,
                    mask_guidance=5.0, mask_threshold=0.8),
    "fast": Preset(anomaly_tokens=4, spatial_tokens=4, mask_tokens=16, encoder_widths=(64, 128, 256, 512),
                   train_steps=6_000, mask_train_steps=2_000, batch_size=4, learning_rate=0.02,
                   save_every=1_000, ddim_steps=50, eta=1.0, guidance=1.0, mask_ddim_steps=50,
                   mask_guidance=5.0, mask_threshold=0.8),
    "tiny": Preset(anomaly_tokens=2, spatial_tokens=2, mask_tokens=2, encoder_widths=(8, 16),
                   train_steps=8, mask_train_steps=6, batch_size=2, learning_rate=0.05,
                   save_every=4, ddim_steps=4, eta=1.0, guidance=1.0, mask_ddim_steps=3,
                   mask_guidance=5.0, mask_threshold=0.6),
}


def preset(schedule: str, **overrides: int | float | None) -> Preset:
    """The named preset with the non-None overrides applied."""
    return replace(PRESETS[schedule], **{k: v for k, v in overrides.items() if v is not None})
