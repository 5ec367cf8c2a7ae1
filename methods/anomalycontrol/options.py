"""Protocol options of the `anomalycontrol` method."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from acbench.masks import MaskSourceSpec


class AnomalyControlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal["sd15", "tiny"] = Field(
        "sd15",
        description="sd15: SD-1.5-inpainting + BLIP-2 ITM ViT-g; "
        "tiny: small random networks (tests, CPU demo)",
    )
    schedule: Literal["paper", "fast", "tiny"] = "paper"
    ablation: Literal["full", "no_csm", "no_asea", "no_sga"] = "full"
    per_category: bool = Field(False, description="one adapter per category instead of one for the dataset")
    # weights (each: a local folder/file; else the HF cache / hub, see acbench.weights)
    sd_inpainting_path: Path | None = None
    blip2_path: Path | None = None
    ip_adapter_path: Path | None = Field(
        None, description="ip-adapter_sd15.safetensors/.bin to initialise SGA"
    )
    # CSM / ASEA
    asea_steps: int = Field(5, ge=0, description="ASEA passes (the reference: 5 Adam steps)")
    asea_lr: float = Field(0.1, gt=0)
    captions: Path | None = Field(None, description="JSON {image path relative to the dataset root: caption}")
    caption_template: str = "The {category} has {defect}"
    cache_dir: Path | None = Field(None, description="CSM feature cache (default ~/.cache/acbench/...)")
    # training
    pretrained_fit: Path | None = Field(
        None,
        description="a folder from `python -m acbench_methods.anomalycontrol` (e.g. multi-GPU): copied, not retrained",
    )
    train_steps: int | None = Field(None, ge=1, description="override the schedule's optimiser steps")
    train_scale: float = Field(0.5, ge=0, description="lambda during training")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    # inference
    scale: float = Field(1.0, ge=0, description="lambda at inference")
    steps: int | None = Field(None, ge=1, description="override the schedule's sampling steps")
    strength: float = Field(0.7, gt=0, le=1)
    guidance: float = Field(7.0, ge=1)
    negative_prompt: str = "monochrome, lowres, bad anatomy, worst quality, low quality"
    prompt: Literal["reference", "template"] = Field(
        "reference", description="target text: the reference's caption (as released) or the template"
    )
    references: Literal["category", "dataset"] = Field(
        "category", description="draw references from this category, or from any category (non-matching)"
    )
    composite: Literal["inside", "blurred", "off"] = "inside"
    blur_sigma: float = Field(5.0, ge=0, description="soft-edge sigma in px at 512 px (scaled with size)")
    batch_size: int = Field(8, ge=1, description="images per pipeline call")
    mask_source: MaskSourceSpec = MaskSourceSpec()
