"""The embedded demo dataset: real texture photographs that ship inside scikit-image, with drawn defects.

Three categories built from `skimage.data.brick()`, `grass()` and `gravel()` (512x512 grayscale
photographs, loaded offline), tinted per category. Normal images are random crops, flips and
rotations; each category has three defect types drawn with an exact pixel mask. The set is written
in the MVTec AD layout so the same reader serves it and real data. Deterministic by seed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import data as skdata
from skimage.draw import ellipse, line_aa

from acbench.data.io import save_png

DEMO_VERSION = 1
SIZE = 128
N_TRAIN, N_TEST_GOOD, N_PER_DEFECT = 24, 8, 9

# category -> (texture loader, RGB tint, defect types)
CATEGORIES: dict[str, tuple[Callable[[], np.ndarray], tuple[float, float, float], tuple[str, ...]]] = {
    "brick": (skdata.brick, (1.00, 0.62, 0.45), ("crack", "hole", "stain")),
    "grass": (skdata.grass, (0.55, 0.85, 0.40), ("burn", "contamination", "hole")),
    "gravel": (skdata.gravel, (0.85, 0.82, 0.76), ("crack", "contamination", "scratch")),
}


def _tinted(gray: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    g = gray.astype(np.float32) / 255.0
    return np.clip(g[..., None] * np.array(tint, np.float32) * 1.15, 0, 1)


def _normal_view(texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (scale 0.4-0.6 of the photograph), flip and quarter rotation, resized to SIZE."""
    h = texture.shape[0]
    crop = int(h * rng.uniform(0.4, 0.6))
    y, x = rng.integers(0, h - crop + 1, size=2)
    patch = texture[y : y + crop, x : x + crop]
    patch = np.rot90(patch, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    zoom = SIZE / patch.shape[0]
    return np.clip(ndimage.zoom(patch, (zoom, zoom, 1), order=1)[:SIZE, :SIZE], 0, 1)


def _blob(rng: np.random.Generator, radius: float) -> np.ndarray:
    """An irregular blob: a smoothed noise field thresholded around a random centre."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    cy, cx = rng.uniform(0.25, 0.75, size=2) * SIZE
    dist = np.hypot(yy - cy, xx - cx) / radius
    noise = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), sigma=radius / 3)
    noise /= np.abs(noise).max() + 1e-8
    return dist + 0.6 * noise < 1.0


def _polyline(rng: np.random.Generator, steps: int, step_len: float, wiggle: float) -> np.ndarray:
    """A thin random-walk curve (anti-aliased) as a float map in [0, 1]."""
    canvas = np.zeros((SIZE, SIZE), np.float32)
    y, x = rng.uniform(0.2, 0.8, size=2) * SIZE
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(steps):
        angle += rng.normal(0, wiggle)
        ny, nx = y + step_len * np.sin(angle), x + step_len * np.cos(angle)
        rr, cc, val = line_aa(int(y), int(x), int(np.clip(ny, 0, SIZE - 1)), int(np.clip(nx, 0, SIZE - 1)))
        keep = (rr >= 0) & (rr < SIZE) & (cc >= 0) & (cc < SIZE)
        canvas[rr[keep], cc[keep]] = np.maximum(canvas[rr[keep], cc[keep]], val[keep])
        y, x = float(np.clip(ny, 0, SIZE - 1)), float(np.clip(nx, 0, SIZE - 1))
    return canvas


def _paint(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alpha-blend a colour layer; the mask is every pixel the defect visibly changed (alpha > 0.25)."""
    out = img * (1 - alpha[..., None]) + colour * alpha[..., None]
    return np.clip(out, 0, 1), alpha > 0.25


def _crack(img, rng):
    line = _polyline(rng, steps=int(rng.integers(8, 16)), step_len=6, wiggle=0.5)
    line = np.clip(ndimage.grey_dilation(line, size=2) * 1.2, 0, 1)
    return _paint(img, line * 0.9, img * 0.15)


def _scratch(img, rng):
    line = _polyline(rng, steps=int(rng.integers(6, 12)), step_len=8, wiggle=0.08)
    return _paint(img, line * 0.85, np.full(3, 0.95, np.float32))


def _hole(img, rng):
    alpha = np.zeros((SIZE, SIZE), np.float32)
    cy, cx = rng.uniform(0.25, 0.75, size=2) * SIZE
    ry, rx = rng.uniform(5, 12, size=2)
    rr, cc = ellipse(cy, cx, ry, rx, shape=alpha.shape, rotation=rng.uniform(0, np.pi))
    alpha[rr, cc] = 1.0
    alpha = ndimage.gaussian_filter(alpha, 1.0)
    shade = ndimage.shift(alpha, (2, 2), order=1)  # a darker inner edge reads as depth
    colour = np.clip(img * 0.08 + 0.05 * shade[..., None], 0, 1)
    return _paint(img, alpha, colour)


def _stain(img, rng):
    alpha = ndimage.gaussian_filter(_blob(rng, rng.uniform(8, 16)).astype(np.float32), 1.5) * 0.7
    return _paint(img, alpha, img * np.array([0.45, 0.32, 0.22], np.float32))


def _burn(img, rng):
    alpha = ndimage.gaussian_filter(_blob(rng, rng.uniform(8, 14)).astype(np.float32), 2.0)
    return _paint(img, alpha, np.array([0.30, 0.20, 0.10], np.float32) * (0.6 + 0.4 * img))


def _contamination(img, rng):
    alpha = ndimage.gaussian_filter(_blob(rng, rng.uniform(4, 9)).astype(np.float32), 0.8)
    colour = np.array(rng.choice([[0.15, 0.35, 0.95], [0.95, 0.15, 0.6], [0.95, 0.9, 0.1]]), np.float32)
    return _paint(img, alpha, colour * (0.7 + 0.3 * img))


DEFECTS = {"crack": _crack, "scratch": _scratch, "hole": _hole, "stain": _stain, "burn": _burn,
           "contamination": _contamination}


def _draw_defect(kind: str, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(20):  # redraw the rare defect that fell (almost) entirely off the image
        out, mask = DEFECTS[kind](img, rng)
        if mask.sum() >= 12:
            return out, mask
    raise RuntimeError(f"could not draw a visible '{kind}' defect")


def _u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_demo(out: str | Path, seed: int = 0) -> Path:
    """Write the demo dataset in MVTec layout under `out` (deterministic by seed)."""
    out = Path(out)
    for c_index, (category, (load, tint, defects)) in enumerate(CATEGORIES.items()):
        texture = _tinted(load(), tint)
        rng = np.random.default_rng([seed, c_index])
        base = out / category
        for i in range(N_TRAIN):
            save_png(base / "train" / "good" / f"{i:03d}.png", _u8(_normal_view(texture, rng)))
        for i in range(N_TEST_GOOD):
            save_png(base / "test" / "good" / f"{i:03d}.png", _u8(_normal_view(texture, rng)))
        for defect in defects:
            for i in range(N_PER_DEFECT):
                img, mask = _draw_defect(defect, _normal_view(texture, rng), rng)
                save_png(base / "test" / defect / f"{i:03d}.png", _u8(img))
                save_png(base / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return out


def demo_cache_dir() -> Path:
    base = os.environ.get("ACBENCH_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "acbench")
    return Path(base).expanduser()


def _source_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]


def materialise_demo(seed: int = 0, cache: Path | None = None) -> Path:
    """The demo dataset folder, written once into the cache (atomically: a folder rename)."""
    cache = cache or demo_cache_dir()
    target = cache / f"demo-v{DEMO_VERSION}-{_source_digest()}-seed{seed}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".demo-"))
    try:
        write_demo(tmp, seed)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():  # a concurrent writer losing the rename race is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------- #
# Stand-in texture folder for the methods that need DTD (or RealNet's SDAS images)

#: scikit-image's bundled photographs that are not demo categories. The folder built from them stands in
#: for DTD / SDAS in the demo only: it exercises the texture-blending code paths, and results made with it
#: are never comparable to results made with the real folders.
STAND_IN_TEXTURES = ("astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
                     "immunohistochemistry", "moon", "rocket", "retina", "cell", "page")
#: the value of a method's `texture_path` / `sdas_path` that names this folder in a protocol
DEMO_TEXTURES = "demo:textures"


def write_demo_textures(out: str | Path, crops_per_image: int = 2) -> Path:
    """Square crops (resized to SIZE) of the stand-in photographs, as PNG files under `out` (deterministic)."""
    out = Path(out)
    rng = np.random.default_rng(0)
    for name in STAND_IN_TEXTURES:
        photo = getattr(skdata, name)().astype(np.float32) / 255.0
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        h, w = photo.shape[:2]
        for i in range(crops_per_image):
            side = int(min(h, w) * rng.uniform(0.4, 0.7))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            zoom = SIZE / side
            crop = ndimage.zoom(photo[y : y + side, x : x + side, :3], (zoom, zoom, 1), order=1)[:SIZE, :SIZE]
            save_png(out / f"{name}_{i}.png", _u8(crop))
    return out


def materialise_demo_textures(cache: Path | None = None) -> Path:
    """The stand-in texture folder, written once into the cache next to the demo dataset."""
    cache = cache or demo_cache_dir()
    target = cache / f"demo-textures-v{DEMO_VERSION}-{_source_digest()}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".demo-textures-"))
    try:
        write_demo_textures(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
