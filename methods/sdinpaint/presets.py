"""Presets of `sd-inpaint` (which networks, sampler settings, negative prompt) and the prompt template."""

from __future__ import annotations

import string
from dataclasses import dataclass

PROMPT_TEMPLATE = "a photo of a {object} with a {defect}"
TEMPLATE_FIELDS = ("object", "defect")
# DIAG's negative prompt (intelligolabs/DIAG generate_augmented_images.py), used with its SDXL preset.
DIAG_NEGATIVE = "smooth, plain, black, dark, shadow"
# No published SD-1.5 baseline fixes one; this one asks for a visible, sharp defect (acbench's choice).
SD15_NEGATIVE = "smooth, plain, clean, flawless, blurry, low quality"


@dataclass(frozen=True)
class Preset:
    model: str  # sd15 / tiny: acbench_methods.diffusion components; sdxl / tiny-sdxl: sdinpaint.sdxl
    resolution: int  # sampling size (square); images are resized to it and back
    steps: int
    guidance: float
    strength: float
    negative_prompt: str
    padding_mask_crop: int  # 0: paint the whole image; > 0: diffusers' crop around the mask

    @property
    def is_sdxl(self) -> bool:
        return self.model in ("sdxl", "tiny-sdxl")


PRESETS = {
    # SD-1.5-inpainting with the pipeline's defaults (PNDM, 50 steps, CFG 7.5), painting from pure noise.
    "sd15": Preset("sd15", 512, 50, 7.5, 1.0, SD15_NEGATIVE, 0),
    # DIAG (Girella et al., CBMI 2024): SDXL-inpainting at 1024 px, 30 steps, CFG 20, strength 0.99,
    # its negative prompt and padding_mask_crop=2.
    "diag": Preset("sdxl", 1024, 30, 20.0, 0.99, DIAG_NEGATIVE, 2),
    # Tiny random networks of the same shape (CPU tests, the demo): not comparable.
    "tiny": Preset("tiny", 64, 4, 7.5, 1.0, SD15_NEGATIVE, 0),
    "tiny-diag": Preset("tiny-sdxl", 64, 4, 20.0, 0.99, DIAG_NEGATIVE, 2),
}


def template_fields(template: str) -> list[str]:
    """The {names} a template uses; a ValueError for a malformed one."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_template(template: str) -> str:
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise ValueError(f"malformed prompt template ({exc})") from None
    unknown = sorted(set(fields) - set(TEMPLATE_FIELDS))
    if unknown or "defect" not in fields:
        raise ValueError(f"the prompt template may use only {{object}} and {{defect}} and needs {{defect}}; "
                         f"found {fields or 'no field'}")
    return template


def words(name: str) -> str:
    """A folder name as words: 'metal_nut' -> 'metal nut', 'pill_type' -> 'pill type'."""
    return " ".join(name.replace("_", " ").split())


def render_prompt(template: str, category: str, defect: str) -> str:
    """The prompt for a category and a defect text (already words, e.g. from `CategoryData.text`)."""
    return template.format(object=words(category), defect=words(defect))
