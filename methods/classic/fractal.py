"""FractalAD's Fractal Anomaly Generation (Xia et al., "FractalAD: A simple industrial anomaly
detection method using fractal anomaly generation and backbone knowledge distillation", 2023;
official code AIRS-CSR/FractalAD `fag.py::FAG`, `fractals/ifs.py`, per-category `is_findobj` in
`run.py`; Apache-2.0).

A square of the normal image itself (side 10-50 % of the short side, or, with object finding,
5-150 % of the object's short side) is colour-augmented (one of: ColorJitter(0.2), ColorJitter(
brightness = contrast = 1), or two channels scaled by 2·U(0, 1) and wrapped to uint8 as the official
code does), flipped with p = 0.5 per axis, rotated by U(15°, 75°) without expansion (the corners drop
out), cut to a random fractal (an IFS of two contractive affine maps rendered with a random 3×3 stamp)
and pasted at another place. The mask is the pasted region dilated by a 3×3 kernel three times (about
3 px beyond the changed pixels; the method's choice). With p = 0.5 Gaussian noise N(0, 10²) (one draw
per pixel, the same on every channel) is added inside that dilated mask. Pixels outside the mask are
the normal image's.

Presets:
- `official`: object finding (`find_object: auto`) for capsule, pill, screw, toothbrush and zipper as
  FractalAD's `findobj_cfg`. FractalAD's closing ColorJitter(0.05) is applied with the same seed to
  both images of its training pair, so it is a pair augmentation, not part of the anomaly, and is not
  applied here.
- `asbench`: as ASBench's fork: object finding off for every category, ASBench's ±90° pre-rotation
  with p = 0.3, and the closing ColorJitter(0.05) applied to the anomalous image only (ASBench pairs it
  with the un-jittered normal image), so pixels outside the mask differ slightly from the normal image.

acbench synthesises at the dataset's working size (FractalAD takes the full-resolution image and
resizes the result; ASBench passes 256 px images). The chaos game is vectorised: 1000 chains of 100
steps from the first map's fixed point instead of one chain of 100 000 steps (same attractor and
visit distribution, not the same points; numba is not a dependency).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import cv2
import numpy as np
import torch
from acbench_methods.classic.common import asbench_pre_rotate, pick_normal, torch_seed, uint8_wrap
from pydantic import BaseModel, ConfigDict, Field
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from acbench.synthesis import GenerationRequest, Sample, Synthesizer

#: FractalAD `run.py::findobj_cfg`: categories whose patches are taken from and pasted onto the object.
FIND_OBJECT_CATEGORIES = frozenset({"capsule", "pill", "screw", "toothbrush", "zipper"})


class FractalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["official", "asbench"] = Field(
        "official", description="asbench: no object finding, ±90° pre-rotation, closing jitter on the anomaly")
    find_object: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: FractalAD's per-category table (official preset) or off (asbench preset)")


# --------------------------------------------------------------------------------------------- #
# Iterated function systems (Anderson & Farrell's sampler, as vendored by FractalAD)


def sample_singular_values(n: int, a: float, rng: np.random.Generator) -> np.ndarray:
    """n pairs (s1 >= s2) in [0, 1] with sum(s1 + 2·s2) = a, drawn pair by pair as the IFS sampler does."""
    s = np.empty((n, 2))
    p, q = a, a - 3 * n + 3
    for i in range(n - 1):
        s1 = rng.uniform(max(0.0, q / 3), min(1.0, p))
        q, p = q - s1, p - s1
        s2 = rng.uniform(max(0.0, q / 2), min(s1, p / 2))
        q, p = q - 2 * s2 + 3, p - 2 * s2
        s[i] = s1, s2
    s2 = rng.uniform(max(0.0, (p - 1) / 2), p / 3)
    s[-1] = p - 2 * s2, s2
    return s


def sample_system(n: int, rng: np.random.Generator) -> np.ndarray:
    """n contractive affine maps as an (n, 2, 3) array: U·diag(s)·V with random rotations/reflections U,
    V, singular values with sum(s1 + 2·s2) ~ U((5 + n)/2, (6 + n)/2), translations U(-1, 1)."""
    base = np.sign(rng.random((2 * n, 2, 1)) - 0.5) * np.eye(2)
    angle = rng.uniform(-np.pi, np.pi, 2 * n)
    c, s_ = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([c, -s_], -1), np.stack([s_, c], -1)], -2)
    uv = rot @ base
    u, v = uv[:n], uv[n:]
    sv = sample_singular_values(n, rng.uniform((5 + n) / 2, (6 + n) / 2), rng)
    system = np.empty((n, 2, 3))
    system[:, :, :2] = (u * sv[:, None, :]) @ v
    system[:, :, 2] = rng.uniform(-1, 1, (n, 2))
    return system


def chaos_game(system: np.ndarray, rng: np.random.Generator, chains: int = 1000, steps: int = 100) -> np.ndarray:
    """Points of the attractor by random iteration, maps picked with probability ∝ |det|, every chain
    started at the fixed point of map 0 (a point of the attractor). Returns (chains·steps, 2)."""
    a, b = system[:, :, :2], system[:, :, 2]
    det = np.abs(np.linalg.det(a))
    probs = det / det.sum()
    start = np.linalg.solve(np.eye(2) - a[0], b[0])
    picks = rng.choice(len(system), size=(steps, chains), p=probs)
    m00, m01, m10, m11 = a[:, 0, 0][picks], a[:, 0, 1][picks], a[:, 1, 0][picks], a[:, 1, 1][picks]
    t0, t1 = b[:, 0][picks], b[:, 1][picks]
    points = np.empty((steps, chains, 2))
    x, y = np.full(chains, start[0]), np.full(chains, start[1])
    for t in range(steps):
        x, y = m00[t] * x + m01[t] * y + t0[t], m10[t] * x + m11[t] * y + t1[t]
        points[t, :, 0], points[t, :, 1] = x, y
    return points.reshape(-1, 2)


def render(points: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """Binary side×side image of the points fitted to their bounding box, each point stamped with one
    random 3×3 binary pattern (each cell on with p = 0.5; redrawn if all cells are off)."""
    cells = np.zeros(9, bool)
    while not cells.any():
        cells = rng.integers(0, 2, 9).astype(bool)
    offsets = np.stack(np.divmod(np.flatnonzero(cells), 3), 1) - 1
    xy = np.ascontiguousarray(points.T)
    lo, hi = xy.min(1, keepdims=True), xy.max(1, keepdims=True)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    rows, cols = ((xy - lo) * ((side - 1) / span)).astype(np.int64)  # x -> row, y -> column, in [0, side - 1]
    hits = np.zeros((side, side), bool)
    hits[rows, cols] = True
    image = np.zeros((side, side), bool)
    for dr, dc in offsets:  # image[r + dr, c + dc] |= hits[r, c], inside the square
        image[max(dr, 0) : side + min(dr, 0), max(dc, 0) : side + min(dc, 0)] |= \
            hits[max(-dr, 0) : side + min(-dr, 0), max(-dc, 0) : side + min(-dc, 0)]
    return image


def fractal_stencil(side: int, rng: np.random.Generator) -> np.ndarray:
    """FractalAD's stencil: an IFS of two maps, 100 000 points, rendered at side×side."""
    return render(chaos_game(sample_system(2, rng), rng), side, rng)


# --------------------------------------------------------------------------------------------- #
# The anomaly


def object_mask(image: np.ndarray) -> tuple[np.ndarray, float]:
    """FractalAD's `OBJ_mask`: the object by a threshold relative to the top-left corner's brightness
    (on a 256 px, 5×5-blurred grey copy) and the short side of the largest contour's minimum-area
    rectangle. Returns (bool mask at the image's size, short side in px)."""
    h, w = image.shape[:2]
    # FractalAD converts its RGB array with COLOR_BGR2GRAY, i.e. with the red and blue weights swapped.
    grey = cv2.blur(cv2.cvtColor(cv2.resize(image, (256, 256)), cv2.COLOR_BGR2GRAY), (5, 5))
    corner = float(grey[:20, :20].mean())
    if corner > 128:
        _, obj = cv2.threshold(grey, int(corner) - 50, 255, cv2.THRESH_BINARY_INV)
    else:
        _, obj = cv2.threshold(grey, int(corner) + 10, 255, cv2.THRESH_BINARY)
    obj = cv2.resize(cv2.medianBlur(obj, 5), (w, h))
    contours, _ = cv2.findContours(obj, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.ones((h, w), bool), float(min(h, w))
    side = min(cv2.minAreaRect(max(contours, key=cv2.contourArea))[1])
    return obj > 0, float(side)


def _corner_in(mask: np.ndarray, cut: int, rng: np.random.Generator) -> tuple[int, int]:
    """FractalAD's `coord_in_mask`: a centre on the object (rejection sampling), as a top-left corner."""
    h, w = mask.shape
    for _ in range(1000):
        y = int(rng.uniform(cut // 2, h - cut // 2))
        x = int(rng.uniform(cut // 2, w - cut // 2))
        if mask[min(y, h - 1), min(x, w - 1)]:
            return y - cut // 2, x - cut // 2
    return (h - cut) // 2, (w - cut) // 2


def _crop(image: np.ndarray, y: int, x: int, cut: int) -> np.ndarray:
    """image[y:y+cut, x:x+cut] with black outside the image (PIL's crop)."""
    out = np.zeros((cut, cut, 3), np.uint8)
    h, w = image.shape[:2]
    ys, xs = slice(max(y, 0), min(y + cut, h)), slice(max(x, 0), min(x + cut, w))
    out[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x] = image[ys, xs]
    return out


def _change_colour(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = patch.copy()
    channels, factors = rng.choice(3, size=2), rng.random(2)
    for c, f in zip(channels, factors):  # with replacement: a channel may be scaled twice
        out[..., c] = uint8_wrap(out[..., c] * f * 2)
    return out


def _colour_op(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    choice = int(rng.integers(3))
    if choice == 2:
        return _change_colour(patch, rng)
    jitter = (v2.ColorJitter(0.2, 0.2, 0.2, 0.2) if choice == 0 else v2.ColorJitter(brightness=1, contrast=1))
    t = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)
    with torch.random.fork_rng():
        torch.manual_seed(torch_seed(rng))
        return jitter(t).permute(1, 2, 0).numpy()


def fractal_anomaly(image: np.ndarray, rng: np.random.Generator, find_object: bool, lb: float = 0.1,
                    hb: float = 0.5, rotation: tuple[float, float] = (15, 75), noise_amp: float = 10.0):
    """FAG without its closing pair jitter. Returns (out, mask, pasted): `pasted` is the region whose
    pixels were replaced, `mask` its 3-pass 3×3 dilation, the only pixels that may differ from `image`."""
    h, w = image.shape[:2]
    cut = int(rng.uniform(lb * min(h, w), hb * min(h, w)))
    if find_object:
        obj, short = object_mask(image)
        cut = int(rng.uniform(0.5 * lb * short, 3 * hb * short))
    cut = max(cut, 4)
    if find_object:
        fy, fx = _corner_in(obj, cut, rng)
    else:
        fy, fx = int(rng.uniform(0.1 * h, 0.9 * h - cut)), int(rng.uniform(0.1 * w, 0.9 * w - cut))
    patch = _colour_op(_crop(image, fy, fx, cut), rng)
    if rng.random() > 0.5:
        patch = patch[:, ::-1]
    if rng.random() > 0.5:
        patch = patch[::-1]
    rgba = np.concatenate([patch, np.full((cut, cut, 1), 255, np.uint8)], axis=2)
    rgba = TF.rotate(torch.from_numpy(np.ascontiguousarray(rgba)).permute(2, 0, 1), float(rng.uniform(*rotation)),
                     interpolation=TF.InterpolationMode.NEAREST, fill=0).permute(1, 2, 0).numpy()
    if find_object:
        ty, tx = _corner_in(obj, cut, rng)
    else:
        ty, tx = int(rng.uniform(0.1 * h, 0.9 * h - cut)), int(rng.uniform(0.1 * w, 0.9 * w - cut))
    stencil = (rgba[..., 3] > 0) & fractal_stencil(cut, rng)
    pasted = np.zeros((h, w), bool)
    ys, xs = slice(max(ty, 0), min(ty + cut, h)), slice(max(tx, 0), min(tx + cut, w))
    local = (slice(ys.start - ty, ys.stop - ty), slice(xs.start - tx, xs.stop - tx))
    pasted[ys, xs] = stencil[local]
    out = image.copy()
    out[pasted] = rgba[..., :3][local][stencil[local]]
    mask = cv2.dilate(pasted.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3).astype(bool)
    if rng.random() > 0.5:
        noisy = np.clip(out + noise_amp * rng.standard_normal((h, w, 1)), 0, 255).astype(np.uint8)
        out[mask] = noisy[mask]
    return out, mask, pasted


class Fractal(Synthesizer):
    Options = FractalOptions
    description = "FractalAD's fractal anomaly generation (Xia et al. 2023): fractal-cut self-patches"

    def generate(self, data, request: GenerationRequest) -> Iterator[Sample]:
        rng = request.rng()
        opts = self.options
        asbench = opts.preset == "asbench"
        if opts.find_object == "auto":
            find_object = not asbench and data.category in FIND_OBJECT_CATEGORIES
        else:
            find_object = opts.find_object == "on"
        closing = v2.ColorJitter(0.05, 0.05, 0.05, 0.05)
        for _ in range(request.count):
            image, source = pick_normal(data, rng)
            if asbench:
                image = asbench_pre_rotate(image, rng)
            out, mask = image, np.zeros(image.shape[:2], bool)
            while not (mask.any() and (out != image).any()):
                out, mask, _ = fractal_anomaly(image, rng, find_object)
            if asbench:
                with torch.random.fork_rng():
                    torch.manual_seed(torch_seed(rng))
                    out = closing(torch.from_numpy(out).permute(2, 0, 1)).permute(1, 2, 0).numpy()
            yield Sample(np.ascontiguousarray(out), mask, request.anomaly_type, source)
