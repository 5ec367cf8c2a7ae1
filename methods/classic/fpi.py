"""Foreign Patch Interpolation (Tan, Hou, Batten, Qiu & Kainz, "Detecting Outliers with Foreign Patch
Interpolation", MELBA 2022; official code jemtan/FPI `self_sup_task.py::patch_ex`).

`preset: official` is FPI: a square patch of a second normal training image of the same category is
interpolated into the normal image, out = α·normal + (1 − α)·foreign with α ~ U(0.05, 0.95), inside
[c − w, c + w) per axis, the centre c uniform in the central 80 % of the image and the half-width
w ~ U{round(0.05·H), …, round(0.2·H) − 1} (the same on both axes). The official label is the soft
1 − α on the patch wherever the two images differ; acbench stores binary masks (SyntheticSet masks
are 0/255), so the mask is that label's support: the patch pixels where the two images differ.
Outside the patch every pixel is the normal image's.

`preset: asbench` is ASBench's "FPI" (`DRAEM/FPI_generation.py`), which is **not** FPI but the MOOD
"sphere intensity" toy outlier from FPI's example notebook: a constant offset ±U(0.2, 0.3)·(max − min)
of the image is added to every channel inside a disk (centre uniform in the central half, radius
U{round(0.05·H), …, round(0.1·H) − 1}), cast to uint8 without clipping as ASBench does (values wrap
around), after ASBench's ±90° pre-rotation with p = 0.3. The mask is the disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from acbench_methods.classic.common import asbench_pre_rotate, box_mask, pick_normal, pick_other_normal, uint8_wrap
from pydantic import BaseModel, ConfigDict, Field

from acbench.errors import UserError
from acbench.synthesis import GenerationRequest, Sample, Synthesizer

MAX_TRIES = 50  # redraws when the pair would show no change (identical patches, a disk offset that wraps to 0)


class FPIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["official", "asbench"] = Field(
        "official", description="official: FPI (foreign patch interpolation); asbench: ASBench's 'FPI', "
                                "an intensity disk after its ±90° pre-rotation")


def interpolate_patch(image: np.ndarray, foreign: np.ndarray, rng: np.random.Generator):
    """FPI's `patch_ex` for one image pair. Returns (out, mask, alpha, box) with box = (y0, y1, x0, x1)."""
    h, w = image.shape[:2]
    cy = int(rng.integers(int(0.1 * h), int(0.9 * h)))  # randint truncates the float bounds
    cx = int(rng.integers(int(0.1 * w), int(0.9 * w)))
    half = int(rng.integers(round(0.05 * h), round(0.2 * h)))
    alpha = float(rng.uniform(0.05, 0.95))
    box = (max(0, cy - half), min(h, cy + half), max(0, cx - half), min(w, cx + half))
    patch = box_mask((h, w), *box)
    out = image.copy()
    mixed = alpha * image.astype(np.float64) + (1 - alpha) * foreign.astype(np.float64)
    out[patch] = np.round(mixed[patch]).astype(np.uint8)
    mask = patch & np.any(image != foreign, axis=2)
    return out, mask, alpha, box


def intensity_disk(image: np.ndarray, rng: np.random.Generator):
    """ASBench's 'FPI': a constant offset inside a disk, wrapped to uint8. Returns (out, mask, offset)."""
    h, w = image.shape[:2]
    cy, cx = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
    radius = int(rng.integers(round(0.05 * h), round(0.10 * h)))
    yy, xx = np.ogrid[:h, :w]
    mask = np.hypot(yy - cy, xx - cx) < radius
    offset = float(rng.uniform(0.2, 0.3)) * float(int(image.max()) - int(image.min()))
    if rng.random() < 0.5:
        offset = -offset
    out = image.copy()
    out[mask] = uint8_wrap(image[mask].astype(np.float64) + offset)
    return out, mask, offset


class FPI(Synthesizer):
    Options = FPIOptions
    description = "FPI (Tan et al., MELBA 2022): a foreign normal patch interpolated in; asbench: intensity disk"

    def generate(self, data, request: GenerationRequest) -> Iterator[Sample]:
        if self.options.preset == "official" and len(data.normal_train) < 2:
            raise UserError(f"method fpi: {data.category} has a single normal training image; FPI interpolates "
                            "a patch of a second one (use preset: asbench, which needs none)")
        rng = request.rng()
        for _ in range(request.count):
            image, source = pick_normal(data, rng)
            if self.options.preset == "asbench":
                image = asbench_pre_rotate(image, rng)
                foreign = None
            else:
                foreign = pick_other_normal(data, rng, source)
            for _ in range(MAX_TRIES):
                if foreign is None:
                    out, mask, _ = intensity_disk(image, rng)
                else:
                    out, mask, *_ = interpolate_patch(image, foreign, rng)
                if (out != image).any():
                    break
            yield Sample(out, mask, request.anomaly_type, source)
