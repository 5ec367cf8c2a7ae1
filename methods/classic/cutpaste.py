"""CutPaste (Li et al., CVPR 2021): a patch of the normal image itself, colour-jittered, pasted elsewhere.

Modes: `patch` (a rectangle of 2-15 % of the image area, aspect ratio 0.3-3.3) and `scar` (a thin
rotated rectangle: 2-16 px wide, 10-25 px long at 256 px, scaled with the image). The mask is the
pasted region; every pixel outside it is the normal image's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from acbench_methods.classic.common import pick_normal, to_tensor, to_uint8, torch_seed
from pydantic import BaseModel, ConfigDict, Field
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from acbench.synthesis import GenerationRequest, Sample, Synthesizer


class CutPasteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["patch", "scar"] = "patch"
    area_ratio: tuple[float, float] = Field((0.02, 0.15), description="patch area / image area")
    aspect_ratio: tuple[float, float] = (0.3, 3.3)
    colour_jitter: float = Field(0.1, ge=0, le=1)


class CutPaste(Synthesizer):
    Options = CutPasteOptions
    description = "CutPaste (patch / scar): a jittered piece of the image pasted elsewhere"

    def generate(self, data, request: GenerationRequest) -> Iterator[Sample]:
        rng = request.rng()
        opts = self.options
        jitter = v2.ColorJitter(brightness=opts.colour_jitter, contrast=opts.colour_jitter,
                                saturation=opts.colour_jitter, hue=min(opts.colour_jitter, 0.5))
        for _ in range(request.count):
            image, source = pick_normal(data, rng)
            with torch.random.fork_rng():
                torch.manual_seed(torch_seed(rng))
                out, mask = self._paste(to_tensor(image), rng, jitter)
            yield Sample(to_uint8(out), mask.numpy(), request.anomaly_type, source)

    def _paste(self, img: torch.Tensor, rng: np.random.Generator, jitter) -> tuple[torch.Tensor, torch.Tensor]:
        _, h, w = img.shape
        ph, pw = self._patch_size(h, w, rng)
        y, x = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        patch = jitter(img[:, y : y + ph, x : x + pw])
        alpha = torch.ones(1, ph, pw)
        if self.options.mode == "scar":
            angle = float(rng.uniform(-45, 45))
            patch = F.rotate(patch, angle, expand=True)
            alpha = F.rotate(alpha, angle, expand=True)  # nearest: stays binary
            ph, pw = patch.shape[1:]
        ty, tx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        mask = torch.zeros(h, w, dtype=torch.bool)
        mask[ty : ty + ph, tx : tx + pw] = alpha[0] > 0.5
        out = img.clone()
        region = out[:, ty : ty + ph, tx : tx + pw]
        out[:, ty : ty + ph, tx : tx + pw] = torch.where(alpha > 0.5, patch, region)
        return out, mask

    def _patch_size(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
        if self.options.mode == "scar":
            scale = h / 256
            return (max(2, int(rng.uniform(10, 25) * scale)), max(1, int(rng.uniform(2, 16) * scale)))
        area = rng.uniform(*self.options.area_ratio) * h * w
        aspect = np.exp(rng.uniform(*np.log(self.options.aspect_ratio)))
        ph = int(np.clip(np.sqrt(area * aspect), 2, h - 1))
        pw = int(np.clip(np.sqrt(area / aspect), 2, w - 1))
        return ph, pw
