"""NSA, Natural Synthetic Anomalies (Schlüter, Tan, Hou & Kainz, "Natural Synthetic Anomalies for
Self-Supervised Anomaly Detection and Localization", ECCV 2022; official code hmsch/natural-synthetic-
anomalies `self_sup_data/self_sup_tasks.py::patch_ex`, settings from `train_mvtec.py`; MIT).

`preset: official` ("NSA" of the paper): up to `num_patches` rectangles (the first always, each
further one with p = 0.5) of **another** normal training image are cut (half-widths (lb + Gamma(2,
0.05))·size clipped to the category's bounds), resized by s ~ clip(N(1, 0.5), bounds) (clipped, as
the official code does, to the *half*-width bounds), shifted to a random place and Poisson-blended in
with `cv2.seamlessClone` (NORMAL_CLONE for objects, MIXED_CLONE for textures). For categories with a
known background colour the patches are kept on the object (object share > `min_object_pct` in the
source, overlap > 25 % at the destination, at most 200 tries). The label is the patch pixels whose
mean absolute change exceeds 1 grey level, 5×5 median-filtered. Per-category settings are those of
`train_mvtec.py` for MVTec AD; other categories get MVTec's common object setting (or its texture
setting for texture categories) without a background colour.

`preset: asbench` is ASBench's `NSA_generation.py`: the **same** image is the source, one patch,
half-widths U{5 %..20 %} of the size, NORMAL_CLONE, binary label, no object masks, after ASBench's
±90° pre-rotation with p = 0.3.

`label: binary` stores that label. `label: logistic` is NSA's logistic-intensity label
(label / (1 + exp(-k·(I - x0))) with I the 5 px disk-median-filtered mean absolute change and the
category's (k, x0)); SyntheticSet masks are binary, so it is stored as the pixels where it is at
least 0.5 (mean change above x0). Either way only pixels inside the pasted patches' boxes can change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
from acbench_methods.classic.common import asbench_pre_rotate, pick_normal, pick_other_normal
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage
from skimage.morphology import disk

from acbench.errors import UserError
from acbench.masks.foreground import TEXTURE_CATEGORIES
from acbench.synthesis import GenerationRequest, Sample, Synthesizer

TRIES = 200  # the official code's attempts per patch placement
MAX_SAMPLE_TRIES = 100  # redraws of a whole sample whose label came out empty


@dataclass(frozen=True)
class NSASettings:
    """One category's `patch_ex` arguments."""

    width_bounds: tuple[tuple[float, float], tuple[float, float]] = ((0.03, 0.4), (0.03, 0.4))
    num_patches: int = 3
    mode: int = cv2.NORMAL_CLONE
    gamma: tuple[float, float, float] | None = (2, 0.05, 0.03)
    resize_bounds: tuple[float, float] = (0.7, 1.3)
    background: tuple[int, int] | None = None  # (brightness, threshold) of the background
    min_object_pct: float = 0.7
    min_overlap_pct: float = 0.25
    logistic: tuple[float, float] = (1 / 6, 15)  # (k, x0)
    same: bool = False


_OBJECT = NSASettings()
_TEXTURE = NSASettings(num_patches=4, mode=cv2.MIXED_CLONE, resize_bounds=(0.5, 2.0), logistic=(1 / 3, 7))
_W = ((0.03, 0.4), (0.03, 0.4))
#: `train_mvtec.py`: per-category half-width bounds, patch counts, background colours, object shares,
#: logistic label parameters; textures use MIXED_CLONE and resize bounds (0.5, 2).
MVTEC_SETTINGS: dict[str, NSASettings] = {
    "bottle": replace(_OBJECT, background=(200, 60), logistic=(1 / 12, 24)),
    "cable": replace(_OBJECT, width_bounds=((0.05, 0.4), (0.05, 0.4)), logistic=(1 / 12, 24)),
    "capsule": replace(_OBJECT, width_bounds=((0.03, 0.15), (0.03, 0.4)), background=(200, 60), logistic=(1 / 2, 4)),
    "hazelnut": replace(_OBJECT, width_bounds=((0.03, 0.35), (0.03, 0.35)), background=(20, 20),
                        logistic=(1 / 12, 24)),
    "metal_nut": replace(_OBJECT, background=(20, 20), min_object_pct=0.5, logistic=(1 / 3, 7)),
    "pill": replace(_OBJECT, width_bounds=((0.03, 0.2), (0.03, 0.4)), background=(20, 20), logistic=(1 / 3, 7)),
    "screw": replace(_OBJECT, width_bounds=((0.03, 0.12), (0.03, 0.12)), num_patches=4, background=(200, 60),
                     min_object_pct=0.5, logistic=(1, 3)),
    "toothbrush": replace(_OBJECT, width_bounds=((0.03, 0.4), (0.03, 0.2)), background=(20, 20),
                          min_object_pct=0.25, logistic=(1 / 6, 15)),
    "transistor": replace(_OBJECT, logistic=(1 / 6, 15)),
    "zipper": replace(_OBJECT, width_bounds=((0.03, 0.4), (0.03, 0.2)), num_patches=4, background=(200, 60),
                      logistic=(1 / 6, 15)),
    **{t: replace(_TEXTURE, logistic=(1 / 3, 7)) for t in ("carpet", "grid", "leather", "tile")},
    "wood": replace(_TEXTURE, logistic=(1 / 6, 15)),
}
#: ASBench's call: `patch_ex` defaults on the image itself.
ASBENCH_SETTINGS = NSASettings(width_bounds=((0.05, 0.2), (0.05, 0.2)), num_patches=1, gamma=None,
                               logistic=(1 / 6, 20), same=True)


def settings_for(category: str, preset: str) -> NSASettings:
    if preset == "asbench":
        return ASBENCH_SETTINGS
    return MVTEC_SETTINGS.get(category, _TEXTURE if category in TEXTURE_CATEGORIES else _OBJECT)


class NSAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["official", "asbench"] = Field(
        "official", description="official: NSA's per-category MVTec settings; asbench: ASBench's self-source call")
    label: Literal["binary", "logistic"] = Field(
        "binary", description="logistic: NSA's logistic-intensity label, stored where it is >= 0.5")


def object_mask(image: np.ndarray, background: tuple[int, int]) -> np.ndarray:
    """Pixels whose mean brightness is further than the threshold from the background's, 7×7 median."""
    brightness, threshold = background
    raw = (np.abs(image.mean(axis=2) - brightness) > threshold).astype(np.uint8)
    return cv2.medianBlur(raw, 7).astype(bool)


def _blend_one(out, src, dest_obj, src_obj, cfg: NSASettings, rng: np.random.Generator):
    """One patch (`_patch_ex`). Returns (new out, box, patch mask) or None when it cannot be placed."""
    dims = np.array(out.shape[:2])
    (lo1, hi1), (lo2, hi2) = (np.round(np.array(b) * d).astype(int) for b, d in zip(cfg.width_bounds, dims))
    if cfg.gamma is not None:
        shape, scale, lower = cfg.gamma
        half1 = int(np.clip((lower + rng.gamma(shape, scale)) * dims[0], lo1, hi1))
        half2 = int(np.clip((lower + rng.gamma(shape, scale)) * dims[1], lo2, hi2))
    else:
        half1, half2 = int(rng.integers(lo1, hi1)), int(rng.integers(lo2, hi2))
    use_obj = src_obj is not None
    for _ in range(TRIES):
        c1, c2 = int(rng.integers(lo1, dims[0] - lo1)), int(rng.integers(lo2, dims[1] - lo2))
        y0, y1 = np.clip([c1 - half1, c1 + half1], 0, dims[0])
        x0, x1 = np.clip([c2 - half2, c2 + half2], 0, dims[1])
        if not use_obj or src_obj[y0:y1, x0:x1].mean() > cfg.min_object_pct:
            break
    else:
        return None
    patch, patch_obj = src[y0:y1, x0:x1], src_obj[y0:y1, x0:x1] if use_obj else None
    height, width = patch.shape[:2]
    s = np.clip(rng.normal(1, 0.5), *cfg.resize_bounds)
    new_h = np.clip(s * height, lo1, hi1)  # the half-width bounds on the full size: the official quirk
    new_w = int(np.clip(int(new_h / height * width), lo2, hi2))
    new_h = int(np.clip(int(new_w / width * height), lo1, hi1))
    patch = cv2.resize(patch, (new_w, new_h))
    if use_obj:
        patch_obj = cv2.resize(patch_obj.astype(np.uint8), (new_w, new_h)).astype(bool)
    height, width = new_h, new_w
    pmask = np.ones((height, width), bool)
    for _ in range(TRIES):
        c1 = int(rng.integers(height // 2 + 1, dims[0] - height // 2 - 1))
        c2 = int(rng.integers(width // 2 + 1, dims[1] - width // 2 - 1))
        y0, y1 = c1 - height // 2, c1 + (height + 1) // 2
        x0, x1 = c2 - width // 2, c2 + (width + 1) // 2
        if not use_obj:
            break
        here = dest_obj[y0:y1, x0:x1]
        if patch_obj.mean() > cfg.min_object_pct and patch_obj.any() and \
                (here & patch_obj).sum() / patch_obj.sum() > cfg.min_overlap_pct:
            break
    else:
        return None
    clone = pmask.copy()
    if use_obj:
        here = dest_obj[y0:y1, x0:x1]
        pmask &= patch_obj | here
        clone = pmask | (~patch_obj & ~here)  # background added to the clone mask against artefacts
    clone = clone.astype(np.uint8) * 255
    clone[0], clone[-1], clone[:, 0], clone[:, -1] = 0, 0, 0, 0
    if (clone > 0).sum() < 50:
        return None
    centre = (int(x1 - width // 2), int(y0 + height // 2))
    try:
        blended = cv2.seamlessClone(np.ascontiguousarray(patch), out, clone, centre, cfg.mode)
    except cv2.error:
        return None
    return blended, (int(y0), int(y1), int(x0), int(x1)), pmask


def natural_synthetic_anomaly(dest: np.ndarray, src: np.ndarray, cfg: NSASettings, rng: np.random.Generator,
                              label: str = "binary"):
    """NSA's `patch_ex`. Returns (out, mask, boxes); `boxes` are the (y0, y1, x0, x1) of the pasted patches."""
    if cfg.same:
        src = dest
    dest_obj = src_obj = None
    if cfg.background is not None:
        dest_obj, src_obj = object_mask(dest, cfg.background), object_mask(src, cfg.background)
    out, region, boxes = dest.copy(), np.zeros(dest.shape[:2], bool), []
    for i in range(cfg.num_patches):
        if i > 0 and rng.integers(2) == 0:
            continue
        placed = _blend_one(out, src, dest_obj, src_obj, cfg, rng)
        if placed is None:
            continue
        out, (y0, y1, x0, x1), pmask = placed
        region[y0:y1, x0:x1] = pmask
        boxes.append((y0, y1, x0, x1))
    change = np.abs(dest.astype(np.float64) - out.astype(np.float64)).mean(axis=2) * region
    mask = cv2.medianBlur((change > 1).astype(np.uint8), 5).astype(bool)
    if label == "logistic":
        k, x0 = cfg.logistic
        intensity = ndimage.median_filter(change * mask, footprint=disk(5))
        mask = mask & (1 / (1 + np.exp(-k * (intensity - x0))) >= 0.5)
    return out, mask, boxes


class NSA(Synthesizer):
    Options = NSAOptions
    description = "NSA (Schlüter et al., ECCV 2022): Poisson-blended resized patches of other normal images"

    def generate(self, data, request: GenerationRequest) -> Iterator[Sample]:
        rng = request.rng()
        cfg = settings_for(data.category, self.options.preset)
        for _ in range(request.count):
            for _ in range(MAX_SAMPLE_TRIES):
                image, source = pick_normal(data, rng)
                if self.options.preset == "asbench":
                    image = asbench_pre_rotate(image, rng)
                src = image if cfg.same else pick_other_normal(data, rng, source)
                out, mask, _ = natural_synthetic_anomaly(image, src, cfg, rng, self.options.label)
                if mask.any():
                    break
            else:
                raise UserError(f"method nsa: no visible patch could be blended into {data.category} images in "
                                f"{MAX_SAMPLE_TRIES} tries; use preset: asbench or another method for it")
            yield Sample(out, mask, request.anomaly_type, source)
