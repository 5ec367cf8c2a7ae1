"""Estimating where the product is in a normal image, so target masks land on the product.

Object categories (bottle, screw, ...) sit on a fairly uniform background; texture categories fill
the frame. `border` thresholds (Otsu) each pixel's colour distance to the median border colour,
then keeps the largest connected component with holes filled; `bright` / `dark` threshold the
grey level with Otsu. An estimate covering almost nothing or almost everything is not trusted and
falls back to the whole image; each such fallback is counted (`whole_image_foreground` in the rows of
the job, and in the report's caveats).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

ForegroundMethod = Literal["auto", "whole", "border", "bright", "dark"]

# MVTec AD / VisA / demo categories that are textures (the product fills the whole frame).
TEXTURE_CATEGORIES = frozenset({"carpet", "grid", "leather", "tile", "wood", "brick", "grass", "gravel"})

MIN_FRACTION, MAX_FRACTION = 0.02, 0.98
WORKING_SIDE = 256


def estimate_foreground(image: np.ndarray, method: ForegroundMethod) -> np.ndarray:
    """A bool HxW foreground mask of a uint8 HxWx3 image (`auto` is resolved by the caller)."""
    if method in ("whole", "auto"):
        return np.ones(image.shape[:2], bool)
    step = max(1, max(image.shape[:2]) // WORKING_SIDE)
    if step > 1:  # estimate on a subsampled copy: the outline of a product needs no more pixels
        small = estimate_foreground(image[::step, ::step], method)
        return np.asarray(Image.fromarray(small).resize(image.shape[1::-1], Image.NEAREST))
    rgb = image.astype(np.float32)
    if method == "border":
        score = _border_distance(rgb)
    else:
        grey = rgb.mean(axis=2)
        score = grey if method == "bright" else -grey
    if np.ptp(score) < 1e-6:
        return _whole_image(image)
    foreground = _largest_component(score > threshold_otsu(score))
    fraction = foreground.mean()
    if not MIN_FRACTION <= fraction <= MAX_FRACTION:
        return _whole_image(image)
    return foreground


def _whole_image(image: np.ndarray) -> np.ndarray:
    """The estimate is not trusted: masks may now land on the background of an object category."""
    from acbench.masks.base import note_fallback

    note_fallback("whole_image_foreground")
    return np.ones(image.shape[:2], bool)


def _border_distance(rgb: np.ndarray) -> np.ndarray:
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    smooth = ndimage.uniform_filter(rgb, size=(5, 5, 1))  # ignore sensor noise and fine texture
    return np.linalg.norm(smooth - np.median(border, axis=0), axis=2)


def _largest_component(binary: np.ndarray) -> np.ndarray:
    binary = ndimage.binary_opening(binary, iterations=2)
    labels, count = ndimage.label(binary)
    if count == 0:
        return binary
    sizes = ndimage.sum(binary, labels, index=np.arange(1, count + 1))
    return ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))
