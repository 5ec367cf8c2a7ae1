"""Protocol options of the `anomalycontrol` method, and the two presets that fill the unset ones.

`preset: official` reproduces the released pipeline (DaniellaHe/AnomalyControl) wherever it is a choice;
`preset: acbench` is this project's variant with its deliberate fixes. A setting left unset (None) takes
the preset's value (`PRESETS`, the one table the README's parity table follows); a setting given in the
protocol always wins. `resolved()` returns the options with every preset field filled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from acbench.masks import MaskSourceSpec
from acbench_methods.diffusion.speed import SpeedOptions

#: Environment variable naming AnomalyDiffusion's released generated masks (`<category>/<type>/*.jpg`),
#: the official preset's target masks when `mask_source` is not given.
RELEASED_MASKS_ENV = "ANOMALYDIFFUSION_MASKS"

#: Values of the preset-dependent options. `official`: as the released code runs; `acbench`: the
#: project's defaults (see the README's parity table for why each differs).
PRESETS: dict[str, dict[str, Any]] = {
    "official": {
        "captions": "dataset",  # MVTec-Caption in the dataset root (`<category>/prompt/<type>/<stem>.txt`)
        "target_masks": "anomalydiffusion",  # AnomalyDiffusion's generated masks
        "train_scale": 1.0,  # the script's 0.5 is swallowed as a LoRA scale: the adapter sees 1.0
        "sga_init": "ip-adapter",  # h94/IP-Adapter models/ip-adapter_sd15 after the text-K/V copy
        "composite": "blurred",  # alpha = Gaussian(mask, sigma 5 at 512 px)
        "composite_at": "model",  # composite at 512 x 512, then resize to the dataset size
        "sampling_seed": 42,  # the same noise seed for every image
        "caption_cleaning": "lavis",  # LAVIS pre_caption: only .!"()*#:;~ removed, no token limit
        "csm_precision": "fp32",  # the ViT-g in fp32 (LAVIS loads on CPU and calls .float())
        "csm_image": "raw",  # the reference image and mask at their file resolution
        "train_resize": "bilinear-crop",  # shorter side bilinear to 512, centre crop; soft mask, paint >= 0.75
    },
    "acbench": {
        "captions": None,  # template "The {category} has {defect}" unless a captions file is given
        "target_masks": "real-augmented",  # the type's real training masks, augmented
        "train_scale": 0.5,
        "sga_init": "text",  # K'/V' copies of the text K/V, random projection
        "composite": "inside",  # pixels outside the target mask stay the normal image's
        "composite_at": "native",
        "sampling_seed": "per-image",
        "caption_cleaning": "strict",  # all punctuation removed, 32 tokens
        "csm_precision": "auto",  # half precision with the frozen networks on CUDA
        "csm_image": "resized",  # the reference resized to the diffusion resolution first
        "train_resize": "bicubic",  # image bicubic to 512 x 512 (aspect not kept), mask nearest and binary
    },
}


class TrainingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    legacy_mask_range: bool = Field(
        False,
        description="feed the UNet's mask channel as -1 (keep) / +1 (paint) during training, as the released "
        "script does; off: {0, 1}, the range the inpainting UNet was pretrained on and sees at inference",
    )


class AnomalyControlOptions(SpeedOptions):  # + compile, compile_mode, compile_backend (generation speed)
    model_config = ConfigDict(extra="forbid")

    preset: Literal["official", "acbench"] = Field(
        "acbench", description="official: the released pipeline; acbench: this project's variant"
    )
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
        None, description="ip-adapter_sd15.safetensors/.bin (or a copy of h94/IP-Adapter) to initialise SGA"
    )
    sga_init: Literal["ip-adapter", "text"] | None = Field(
        None, description="SGA start: IP-Adapter SD-1.5 weights, or copies of the text K/V (preset)"
    )
    # CSM / ASEA
    asea_steps: int = Field(5, ge=0, description="ASEA passes (the reference: 5 Adam steps)")
    asea_lr: float = Field(0.1, gt=0)
    captions: Literal["dataset"] | Path | None = Field(
        None,
        description="per-image captions: 'dataset' (MVTec-Caption `prompt/` folders in the dataset root), a "
        "folder in that layout, the official ano_data_*.json list, or a JSON {image path: caption} (preset)",
    )
    caption_template: str = "The {category} has {defect}"
    caption_cleaning: Literal["lavis", "strict"] | None = None
    csm_precision: Literal["fp32", "auto"] | None = None
    csm_image: Literal["raw", "resized"] | None = None
    cache_dir: Path | None = Field(None, description="CSM feature cache (default ~/.cache/acbench/...)")
    # training
    pretrained_fit: Path | None = Field(
        None,
        description="a folder from `python -m acbench_methods.anomalycontrol` (e.g. multi-GPU): copied, not retrained",
    )
    train_steps: int | None = Field(None, ge=1, description="override the schedule's optimiser steps")
    train_scale: float | None = Field(None, ge=0, description="lambda during training (preset)")
    train_resize: Literal["bilinear-crop", "bicubic"] | None = Field(
        None,
        description="training images and masks to the diffusion resolution: bilinear shorter side + centre "
        "crop with a soft mask, masked image blanked where it is >= 0.75 (as released); or bicubic image and "
        "nearest binary mask (preset)",
    )
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    training: TrainingOptions = TrainingOptions()
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
    composite: Literal["inside", "blurred", "off"] | None = None
    composite_at: Literal["model", "native"] | None = None
    blur_sigma: float = Field(5.0, ge=0, description="soft-edge sigma in px at 512 px (scaled with size)")
    sampling_seed: int | Literal["per-image"] | None = Field(
        None, description="one noise seed for every image (official: 42), or 'per-image' (preset)"
    )
    batch_size: int = Field(8, ge=1, description="images per pipeline call")
    mask_source: MaskSourceSpec | None = Field(
        None, description="target masks (acbench.masks); official preset: AnomalyDiffusion's generated masks"
    )

    def resolved(self) -> AnomalyControlOptions:
        """These options with every unset preset-dependent field set to the preset's value."""
        values = PRESETS[self.preset]
        update = {k: v for k, v in values.items() if k in type(self).model_fields and getattr(self, k) is None}
        return self.model_copy(update=update)

    def _same_as_before(self) -> set[str]:
        """Unset `train_resize` under a preset that resizes bicubically is how every preset trained before
        the option existed: left out of the dump, those jobs keep their hashes and resume."""
        unchanged = self.train_resize is None and PRESETS[self.preset]["train_resize"] == "bicubic"
        return {"train_resize"} if unchanged else set()

    @property
    def target_masks(self) -> str:
        """Where target masks come from: the given `mask_source`, else the preset's choice."""
        return self.mask_source.name if self.mask_source is not None else PRESETS[self.preset]["target_masks"]
