"""Image sets for the quality metrics: grouped by anomaly type, loaded in batches.

A set is `{anomaly_type: [image paths]}`. It comes from a SyntheticSet (its index), from a
category's real anomalies, or from a plain folder: either images directly inside it (one group,
named after the folder) or one sub-folder per type (MVTec's `test/<type>/`; `good` is skipped).
Files are sorted by path, the order torch-fidelity uses for folders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from acbench.data.category import DefectExample
from acbench.data.io import is_image, load_rgb
from acbench.errors import UserError
from acbench.synthesis import SyntheticSet

ImageSets = dict[str, list[Path]]
NORMAL_FOLDER = "good"


def synthetic_sets(synthetic: SyntheticSet) -> ImageSets:
    """Generated images per type, in generation (index) order."""
    return {t: [rec.image for rec in recs] for t, recs in sorted(synthetic.by_type().items())}


def example_sets(examples: dict[str, list[DefectExample]]) -> ImageSets:
    return {t: [ex.image_path for ex in exs] for t, exs in sorted(examples.items()) if exs}


def folder_sets(root: str | Path) -> ImageSets:
    """A SyntheticSet folder, a flat image folder, or a folder of per-type sub-folders."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; give a SyntheticSet or a folder of images")
    if (root / "index.csv").is_file():
        return synthetic_sets(SyntheticSet(root))
    flat = sorted(p for p in root.iterdir() if is_image(p))
    if flat:
        return {root.name: flat}
    sets = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name != NORMAL_FOLDER):
        images = sorted(p for p in sub.iterdir() if is_image(p))
        if images:
            sets[sub.name] = images
    if not sets:
        raise UserError(f"{root}: no images found (directly inside or in one sub-folder per anomaly type)")
    return sets


def load_uint8(path: Path, size: int | None = None) -> np.ndarray:
    """RGB uint8 HxWx3; resized to size x size with PIL bilinear (antialiased) when `size` is given."""
    image = load_rgb(path)
    if size is not None and image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return image


def uint8_batches(paths: list[Path], batch_size: int, size: int | None = None) -> Iterator[torch.Tensor]:
    """NCHW uint8 batches in order; a batch is cut early where the image size changes."""
    batch: list[np.ndarray] = []
    for path in paths:
        image = load_uint8(path, size)
        if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
            yield _stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield _stack(batch)


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def to_signed_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the input range of LPIPS."""
    return images.to(torch.float32) / 127.5 - 1.0
