"""Image and mask I/O with one-line errors naming the file, and atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from acbench.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UserError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__}); replace the file") from None


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """An RGB image as uint8 HxWx3, optionally resized to size x size (bicubic)."""
    img = _open(Path(path)).convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8).copy()


def load_mask(path: str | Path, size: int | None = None) -> np.ndarray:
    """A binary mask as bool HxW; pixels >= 128 are anomalous (robust to JPEG-compressed masks)."""
    img = _open(Path(path)).convert("L")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.NEAREST)
    return np.asarray(img) >= 128


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__})") from None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Run write(tmp) on a temporary file beside `path`, then rename it into place.

    A reader never sees a half-written file: either the old content or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_png(path: str | Path, array: np.ndarray) -> None:
    """Save uint8 RGB or a bool/uint8 mask (written as 0/255) as PNG, atomically."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    img = Image.fromarray(np.ascontiguousarray(array))
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
