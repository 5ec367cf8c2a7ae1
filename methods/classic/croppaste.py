"""Crop-and-paste of real training defects.

A real defect of the requested type from the synthesis split is cut out under its mask, randomly
flipped, rotated and scaled, and pasted onto a normal training image with a feathered edge. By
default it lands near its original position (defects of objects sit on the object), jittered by
`jitter` of the image size; `placement: random` puts it anywhere. The mask is the pasted defect;
outside it the image equals the normal image exactly (feathering softens the inner edge only).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from acbench_methods.classic.common import pick_normal
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from acbench.errors import UserError
from acbench.synthesis import GenerationRequest, Sample, Synthesizer


class CropPasteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    placement: Literal["original", "random"] = "original"
    jitter: float = Field(0.1, ge=0, le=1, description="shift around the original place, share of the size")
    rotation: float = Field(30.0, ge=0, le=180, description="max rotation in degrees")
    scale: tuple[float, float] = (0.8, 1.2)
    feather: float = Field(1.0, ge=0, description="edge blur (Gaussian sigma, px)")


def _transform(patch: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, opts) -> tuple:
    if rng.random() < 0.5:
        patch, alpha = patch[:, ::-1], alpha[:, ::-1]
    angle = float(rng.uniform(-opts.rotation, opts.rotation))
    patch = ndimage.rotate(patch, angle, axes=(0, 1), reshape=True, order=1, mode="constant")
    alpha = ndimage.rotate(alpha, angle, reshape=True, order=1, mode="constant")
    zoom = float(rng.uniform(*opts.scale))
    patch = ndimage.zoom(patch, (zoom, zoom, 1), order=1)
    alpha = ndimage.zoom(alpha, zoom, order=1)
    return patch, alpha


class CropPaste(Synthesizer):
    Options = CropPasteOptions
    description = "real training defects cut under their masks and pasted onto normal images"

    def generate(self, data, request: GenerationRequest) -> Iterator[Sample]:
        examples = data.synthesis.get(request.anomaly_type, [])
        if not examples:
            raise UserError(f"crop-paste: no training defect of type '{request.anomaly_type}' in "
                            f"{data.category} (the synthesis split is empty for it)")
        rng = request.rng()
        produced = 0
        while produced < request.count:
            normal, source = pick_normal(data, rng)
            example = examples[int(rng.integers(len(examples)))]
            sample = self._paste(normal, example.image(data.image_size), example.mask(data.image_size), rng)
            if sample is None:
                continue
            produced += 1
            yield Sample(sample[0], sample[1], request.anomaly_type, source)

    def _paste(self, normal: np.ndarray, defect: np.ndarray, mask: np.ndarray, rng) -> tuple | None:
        if defect.shape != normal.shape:
            defect = np.asarray(ndimage.zoom(defect, (normal.shape[0] / defect.shape[0],
                                                      normal.shape[1] / defect.shape[1], 1), order=1))
            mask = ndimage.zoom(mask.astype(np.float32), (normal.shape[0] / mask.shape[0],
                                                          normal.shape[1] / mask.shape[1]), order=0) > 0.5
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            return None
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        patch, alpha = _transform(defect[y0:y1, x0:x1].astype(np.float32), mask[y0:y1, x0:x1].astype(np.float32),
                                  rng, self.options)
        h, w = normal.shape[:2]
        ph, pw = min(alpha.shape[0], h), min(alpha.shape[1], w)
        patch, alpha = patch[:ph, :pw], alpha[:ph, :pw]
        if self.options.placement == "original":
            cy, cx = (y0 + y1) / 2 + rng.normal(0, self.options.jitter * h), (x0 + x1) / 2 + rng.normal(
                0, self.options.jitter * w)
            ty, tx = int(np.clip(cy - ph / 2, 0, h - ph)), int(np.clip(cx - pw / 2, 0, w - pw))
        else:
            ty, tx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        full_alpha = np.zeros((h, w), np.float32)
        full_alpha[ty : ty + ph, tx : tx + pw] = alpha
        full_patch = np.zeros((h, w, 3), np.float32)
        full_patch[ty : ty + ph, tx : tx + pw] = patch
        out_mask = full_alpha > 0.5
        if not out_mask.any():
            return None
        base = normal.astype(np.float32)
        # Outside the mask the "patch" is the normal image itself, so feathering only softens the
        # inner edge and no pixel outside the mask changes.
        full_patch = np.where(out_mask[..., None], full_patch, base)
        soft = ndimage.gaussian_filter(out_mask.astype(np.float32), self.options.feather) \
            if self.options.feather > 0 else out_mask.astype(np.float32)
        soft = np.where(out_mask, np.maximum(soft, 0.5), 0.0)[..., None]
        out = base * (1 - soft) + full_patch * soft
        return np.clip(np.rint(out), 0, 255).astype(np.uint8), out_mask
