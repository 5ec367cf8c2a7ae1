"""CutOut as ASBench uses it (DeVries & Taylor, "Improved Regularization of Convolutional Neural
Networks with Cutout", 2017; ASBench's `DRAEM/CutOut.py`, called by `MVTecDataset_CutOut`).

One square hole is erased to black. Its centre is uniform over the whole image (no foreground
constraint), its side is 2·(L//2) with L ~ U{20..50} px at 256 px (scaled with the image's short
side), and it is clipped at the border. The mask is exactly the hole: every pixel outside it is the
normal image's, every pixel inside it is 0 (a hole on a black background changes nothing, as in the
official code).

Presets: `official` is the hole alone; `asbench` first applies ASBench's dataset wrapper (with
p = 0.3 the normal image is rotated by U(-90°, 90°) with black corners, and the rotated image is the
pair's normal image).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from acbench_methods.classic.common import asbench_pre_rotate, box_mask, pick_normal
from pydantic import BaseModel, ConfigDict, Field, model_validator

from acbench.synthesis import GenerationRequest, Sample, Synthesizer


class CutOutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["official", "asbench"] = Field(
        "official", description="asbench: ASBench's ±90° pre-rotation with p = 0.3 before the hole")
    length: tuple[int, int] = Field((20, 50), description="range of L (px at 256 px); the side is 2·(L//2)")

    @model_validator(mode="after")
    def _ordered(self):
        if not 2 <= self.length[0] <= self.length[1]:
            raise ValueError("length must be (low, high) with 2 <= low <= high")
        return self


def cutout(image: np.ndarray, rng: np.random.Generator, length: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One black square hole (Cutout with n_holes = 1). Returns the image and the hole's mask."""
    h, w = image.shape[:2]
    scale = min(h, w) / 256
    side = int(rng.integers(length[0], length[1] + 1))  # random.randint: both ends included
    half = max(1, int(side * scale) // 2)
    y, x = int(rng.integers(h)), int(rng.integers(w))
    mask = box_mask((h, w), max(0, y - half), min(h, y + half), max(0, x - half), min(w, x + half))
    out = image.copy()
    out[mask] = 0
    return out, mask


class CutOut(Synthesizer):
    Options = CutOutOptions
    description = "CutOut (DeVries & Taylor 2017, as in ASBench): one black square hole"

    def generate(self, data, request: GenerationRequest) -> Iterator[Sample]:
        rng = request.rng()
        for _ in range(request.count):
            image, source = pick_normal(data, rng)
            if self.options.preset == "asbench":
                image = asbench_pre_rotate(image, rng)
            out, mask = cutout(image, rng, self.options.length)
            yield Sample(out, mask, request.anomaly_type, source)
