"""Folder layouts of released synthetic pairs, and the validation of every pair.

`anomalydiffusion` — the data released with AnomalyDiffusion (Hu et al., AAAI 2024)::

    <path>/<category>/<type>/image/<i>.jpg      generated RGB image (256 px, JPEG q75)
    <path>/<category>/<type>/mask/<i>.jpg       its mask, same stem (pixels >= 128 are defect)
    (other folders such as ori/, recon/, image-mask/ are ignored)

`<path>` is the `generated_dataset` folder itself or a folder containing it. Pairs are taken in
numeric order of the stem (0, 1, 2, ... 10), so "the first N" is the same N everywhere.

`synthetic-set` — what `acbench import` writes: one SyntheticSet per category::

    <path>/<category>/{images/, masks/, index.csv}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acbench.data.io import is_image, load_mask, load_rgb
from acbench.data.mvtec import natural_key
from acbench.errors import UserError
from acbench.synthesis import SyntheticSet

LAYOUTS = ("anomalydiffusion", "synthetic-set")


@dataclass(frozen=True)
class PairRef:
    """One released pair on disk (`mask` None when the image has no mask)."""

    image: Path | None
    mask: Path | None
    name: str


@dataclass
class LoadedPair:
    image: np.ndarray
    mask: np.ndarray
    name: str


def anomalydiffusion_root(path: Path) -> Path:
    nested = path / "generated_dataset"
    return nested if nested.is_dir() else path


def list_categories(path: Path, layout: str) -> list[str]:
    root = anomalydiffusion_root(path) if layout == "anomalydiffusion" else path
    if not root.is_dir():
        raise UserError(f"released: path {path} does not exist")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_types(path: Path, layout: str, category: str) -> list[str]:
    if layout == "synthetic-set":
        return SyntheticSet(path / category).anomaly_types
    folder = anomalydiffusion_root(path) / category
    return sorted(p.name for p in folder.iterdir() if (p / "image").is_dir()) if folder.is_dir() else []


def list_pairs(path: Path, layout: str, category: str, anomaly_type: str) -> list[PairRef]:
    """Every pair of one category and type, in numeric order; a UserError when there is none."""
    if not path.is_dir():
        raise UserError(f"released: path {path} does not exist; set options.path to the folder of released pairs")
    if layout == "synthetic-set":
        records = SyntheticSet(path / category).by_type().get(anomaly_type, [])
        pairs = [PairRef(r.image, r.mask, r.image.name) for r in records]
        where = path / category / "index.csv"
    else:
        where = anomalydiffusion_root(path) / category / anomaly_type
        pairs = _anomalydiffusion_pairs(where)
    if not pairs:
        raise UserError(f"released: no pairs of type '{anomaly_type}' in {where}; expected the "
                        f"'{layout}' layout (see `acbench_methods.released.layouts`)")
    return pairs


def _anomalydiffusion_pairs(folder: Path) -> list[PairRef]:
    images = _by_stem(folder / "image")
    masks = _by_stem(folder / "mask")
    stems = sorted(set(images) | set(masks), key=lambda s: natural_key(Path(s)))
    return [PairRef(images.get(s), masks.get(s), f"{folder.name}/{s}") for s in stems]


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.iterdir() if is_image(p)} if folder.is_dir() else {}


def load_pair(ref: PairRef, size: int | None) -> tuple[LoadedPair | None, str]:
    """The decoded pair, or None and why it is bad (missing file, unreadable, size mismatch, empty)."""
    if ref.image is None:
        return None, "image missing"
    if ref.mask is None:
        return None, "mask missing"
    try:
        image, mask = load_rgb(ref.image), load_mask(ref.mask)
    except UserError as exc:
        return None, str(exc).split(": ", 1)[-1].split(";")[0]
    if image.shape[:2] != mask.shape:
        return None, f"size mismatch: image {image.shape[1]}x{image.shape[0]}, mask {mask.shape[1]}x{mask.shape[0]}"
    if not mask.any():
        return None, "empty mask"
    if size is not None and image.shape[:2] != (size, size):
        image, mask = load_rgb(ref.image, size), load_mask(ref.mask, size)
        if not mask.any():
            return None, f"mask empty at {size} px"
    return LoadedPair(image, mask, ref.name), ""
