"""The built-in mask sources: `real-augmented`, `perlin` and `folder`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from acbench.data.category import CategoryData
from acbench.data.io import is_image, load_mask
from acbench.errors import UserError
from acbench.masks.augment import affine_to, elastic, resize_mask
from acbench.masks.base import ForegroundOptions, MaskSource, note_fallback
from acbench.masks.perlin import perlin_mask

log = logging.getLogger(__name__)


def random_pixel(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    ys, xs = np.nonzero(region)
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def fallback_blob(foreground: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small disk on the foreground: the last resort that keeps every mask non-empty (counted as
    `fallback_mask` in the job's rows: a type whose masks are mostly disks is not the type any more)."""
    note_fallback("fallback_mask")
    h, w = foreground.shape
    cy, cx = random_pixel(foreground, rng)
    radius = max(1.0, 0.03 * min(h, w))
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return disk & foreground


# --------------------------------------------------------------------------------------------- #


class RealAugmentedOptions(ForegroundOptions):
    rotation: float = Field(180.0, ge=0, le=180, description="max |angle| in degrees")
    scale: tuple[float, float] = Field((0.75, 1.25), description="range of the scale factor")
    elastic_alpha: float = Field(0.03, ge=0, description="elastic displacement, fraction of the image side")
    elastic_sigma: float = Field(0.04, gt=0, description="smoothness of the displacement, fraction of the side")
    min_inside: float = Field(0.6, ge=0, le=1, description="least fraction of a placed mask on the foreground")
    attempts: int = Field(20, ge=1)


class RealAugmented(MaskSource):
    """A real training mask of the type, rotated, scaled, moved onto the product and elastically bent.

    The mask's centroid goes to a random foreground pixel; a placement with less than `min_inside` of
    its area on the foreground is drawn again; the result is always clipped to the foreground.
    """

    Options = RealAugmentedOptions
    description = "augmented real training masks of the type, kept on the product"

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self._masks: dict[tuple[Path, tuple[int, int]], np.ndarray] = {}

    def _real_mask(self, path: Path, shape: tuple[int, int]) -> np.ndarray:
        key = (path, shape)
        if key not in self._masks:
            self._masks[key] = resize_mask(load_mask(path), shape)
        return self._masks[key]

    def sample(self, data, anomaly_type, normal, rng):
        o = self.options
        examples = data.synthesis.get(anomaly_type) or []
        if not examples:
            raise UserError(f"mask_source real-augmented: category '{data.category}' has no training mask of "
                            f"type '{anomaly_type}'; choose mask_source 'perlin' or 'folder'")
        shape = normal.shape[:2]
        foreground = o.foreground_of(data.category, normal)
        side = min(shape)
        best = np.zeros(shape, bool)
        for _ in range(o.attempts):
            real = self._real_mask(examples[int(rng.integers(len(examples)))].mask_path, shape)
            if not real.any():
                continue
            placed = affine_to(real, random_pixel(foreground, rng), rng.uniform(-o.rotation, o.rotation),
                               rng.uniform(*o.scale))
            placed = elastic(placed, rng, o.elastic_alpha * side, o.elastic_sigma * side)
            inside = placed & foreground
            if inside.any() and inside.sum() >= o.min_inside * placed.sum():
                return inside
            if inside.sum() > best.sum():
                best = inside
        return best if best.any() else fallback_blob(foreground, rng)


# --------------------------------------------------------------------------------------------- #


class PerlinOptions(ForegroundOptions):
    scale_exponents: tuple[int, int] = Field(
        (0, 6), description="noise scale 2**k per axis, k drawn from [min, max) (anomalib's default 0..6)")
    threshold: float = Field(0.5, description="noise level above which a pixel is anomalous (DRAEM: 0.5)")
    rotation: float = Field(90.0, ge=0, le=180, description="max |rotation| of the noise, degrees")
    area: tuple[float, float] = Field((0.001, 0.5), description="accepted mask area, fraction of the image")
    attempts: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _ranges(self) -> PerlinOptions:
        lo, hi = self.scale_exponents
        if not 0 <= lo < hi <= 8:
            raise ValueError("scale_exponents must satisfy 0 <= min < max <= 8")
        if not 0 <= self.area[0] < self.area[1] <= 1:
            raise ValueError("area must satisfy 0 <= min < max <= 1")
        return self


class PerlinMasks(MaskSource):
    """DRAEM-style masks: anomalib's Perlin noise, rotated and thresholded, clipped to the foreground.

    Draws whose area (after clipping) falls outside `area` are drawn again; the size range of the
    blobs is set by `scale_exponents` (coarse noise = large blobs) and `area`.
    """

    Options = PerlinOptions
    description = "thresholded Perlin-noise blobs (DRAEM), kept on the product"

    def _noise_mask(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        o = self.options
        return perlin_mask(shape, rng, o.scale_exponents, o.threshold, o.rotation)

    def sample(self, data, anomaly_type, normal, rng):
        o = self.options
        shape = normal.shape[:2]
        foreground = o.foreground_of(data.category, normal)
        lo, hi = (a * shape[0] * shape[1] for a in o.area)
        best = np.zeros(shape, bool)
        for _ in range(o.attempts):
            mask = self._noise_mask(shape, rng) & foreground
            if lo <= mask.sum() <= hi and mask.any():
                return mask
            if mask.any() and (not best.any() or abs(mask.sum() - lo) < abs(best.sum() - lo)):
                best = mask
        return best if best.any() else fallback_blob(foreground, rng)


# --------------------------------------------------------------------------------------------- #


class FolderOptions(ForegroundOptions):
    path: Path = Field(description="folder of masks: <path>/<category>/<type>/* or <path>/<type>/*")
    clip_to_foreground: bool = Field(False, description="also keep user masks inside the estimated foreground")


class FolderMasks(MaskSource):
    """Masks a user supplies (e.g. released with a paper), matched by defect type.

    Layout: `<path>/<category>/<type>/*.png|jpg`, or `<path>/<category>/<type>/mask/*` as AnomalyDiffusion
    releases its generated masks, or, for one category, `<path>/<type>/*`. Masks are resized (nearest) to
    the normal image; pixels >= 128 are anomalous; empty masks are skipped.
    """

    Options = FolderOptions
    description = "user-supplied masks matched by defect type"

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self._files: dict[tuple[str, str], list[Path]] = {}

    def files(self, category: str, anomaly_type: str) -> list[Path]:
        key = (category, anomaly_type)
        if key not in self._files:
            root = Path(self.options.path)
            if not root.is_dir():
                raise UserError(f"mask_source folder: path {root} does not exist")
            # AnomalyDiffusion's released masks (the targets AnomalyControl's inference reads) keep a `mask/`
            # level: `generated_masks/<category>/<type>/mask/*.jpg`
            candidates = [root / category / anomaly_type / "mask", root / category / anomaly_type,
                          root / anomaly_type / "mask", root / anomaly_type]
            folder = next((c for c in candidates if c.is_dir()), candidates[-1])
            found = sorted(p for p in folder.glob("*") if is_image(p)) if folder.is_dir() else []
            if not found:
                raise UserError(f"mask_source folder: no masks in {root}/{category}/{anomaly_type}/ or "
                                f"{root}/{anomaly_type}/; add masks for type '{anomaly_type}'")
            self._files[key] = found
        return self._files[key]

    def sample(self, data: CategoryData, anomaly_type, normal, rng):
        files = self.files(data.category, anomaly_type)
        shape = normal.shape[:2]
        foreground = (self.options.foreground_of(data.category, normal) if self.options.clip_to_foreground
                      else np.ones(shape, bool))
        for i in rng.permutation(len(files))[:50]:
            mask = resize_mask(load_mask(files[i]), shape) & foreground
            if mask.any():
                return mask
        raise UserError(f"mask_source folder: the masks of '{anomaly_type}' in {files[0].parent} are empty "
                        f"{'on the estimated foreground ' if self.options.clip_to_foreground else ''}"
                        "(pixels >= 128 count as defect); check the files")
