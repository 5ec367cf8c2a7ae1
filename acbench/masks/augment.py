"""Random geometric and elastic deformation of a binary mask, drawn from a numpy generator."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.transform import AffineTransform, warp


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (H, W)."""
    if mask.shape == shape:
        return mask.astype(bool)
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(img) >= 128


def affine_to(mask: np.ndarray, centre: tuple[float, float], angle_deg: float, scale: float) -> np.ndarray:
    """Rotate and scale `mask` about its own centroid, then move that centroid to `centre` (y, x)."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    # skimage transforms work in (x, y): move the centroid to the origin, rotate/scale, move to target.
    to_origin = AffineTransform(translation=(-cx, -cy))
    rotate_scale = AffineTransform(scale=scale, rotation=np.deg2rad(angle_deg))
    to_target = AffineTransform(translation=(centre[1], centre[0]))
    forward = AffineTransform(to_target.params @ rotate_scale.params @ to_origin.params)
    out = warp(mask.astype(np.float32), forward.inverse, order=1, mode="constant", cval=0.0)
    return out >= 0.5


def elastic(mask: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Elastic deformation (Simard et al. 2003): a Gaussian-smoothed random displacement field.

    Written here rather than with torchvision's ElasticTransform so the field comes from the caller's
    numpy generator (one seed for the whole pipeline). `alpha` is the displacement in pixels.
    """
    if alpha <= 0:
        return mask
    h, w = mask.shape
    # The field is smooth, so it is drawn on a grid of about 64 px and interpolated (fast at 1024 px).
    step = max(1, min(h, w) // 64)
    coarse = (-(-h // step), -(-w // step))
    fields = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.uniform(-1, 1, coarse), sigma / step, mode="constant")
        fields.append(ndimage.zoom(field, (h / coarse[0], w / coarse[1]), order=1)[:h, :w])
    dy, dx = fields
    norm = max(np.abs(dy).max(), np.abs(dx).max(), 1e-8)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    coords = [yy + alpha * dy / norm, xx + alpha * dx / norm]
    return ndimage.map_coordinates(mask.astype(np.float32), coords, order=1, mode="constant") >= 0.5
