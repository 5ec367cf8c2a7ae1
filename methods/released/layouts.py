"""Folder layouts of released synthetic pairs, and the validation of every pair.

`anomalydiffusion` — the data released with AnomalyDiffusion (Hu et al., AAAI 2024)::

    <path>/<category>/<type>/image/<i>.jpg      generated RGB image (256 px, JPEG q75)
    <path>/<category>/<type>/mask/<i>.jpg       its mask, same stem (pixels >= 128 are defect)
    (other folders such as ori/, recon/, image-mask/ are ignored)

`<path>` is the `generated_dataset` folder itself or a folder containing it.

`seas` — the image+mask pairs of SeaS (Dai et al., ICCV 2025), as its inference script
(`models/seas_infer.py`, one run per product and type) writes them and as the Hugging Face dataset
`HUST-SLOW/SeaS` publishes them under `Generated_Anomaly_Images`::

    <path>/<category>/<type>/image/<NNN>.png    generated RGB image (512 px), NNN = 000, 001, ...
    <path>/<category>/<type>/mask/<NNN>.png     its RMP mask (threshold 0.2), same name

`<path>` is the per-dataset folder (`mvtec_anomaly_detection`, `visa`,
`mvtec_3d_anomaly_detection_reorg` in the SeaS scripts) or a folder above it
(`Generated_Anomaly_Images`, or the dataset root) when it holds exactly one dataset.

`dfmgan` — what DFMGAN's own `generate.py --network <category>_<type>.pkl --output DIR` writes
(Duan et al., AAAI 2023), one `DIR` per (category, type) placed at `<path>/<category>/<type>/`::

    <path>/<category>/<type>/<i>_img.png        generated RGB image (256 px), i = 0, 1, ... 99, 100, ...
    <path>/<category>/<type>/<i>_mask.png       its mask, RGB, 255 = defect (the generator's mask >= 0)

Pairs are taken in numeric order of the index (0, 1, 2, ... 10), so "the first N" is the same N
everywhere.

`synthetic-set` — what `acbench import` writes: one SyntheticSet per category::

    <path>/<category>/{images/, masks/, index.csv}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acbench.data.io import is_image, load_mask, load_rgb
from acbench.data.mvtec import natural_key
from acbench.errors import UserError
from acbench.synthesis import SyntheticSet

LAYOUTS = ("anomalydiffusion", "seas", "dfmgan", "synthetic-set")
SEAS_DATASETS = ("mvtec_anomaly_detection", "visa", "mvtec_3d_anomaly_detection_reorg")
DFMGAN_FILE = re.compile(r"^(\d+)_(img|mask)$")


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


def seas_root(path: Path) -> Path:
    """The per-dataset folder: `path` itself, or the single SeaS dataset folder below it."""
    base = path / "Generated_Anomaly_Images" if (path / "Generated_Anomaly_Images").is_dir() else path
    found = [base / name for name in SEAS_DATASETS if (base / name).is_dir()]
    if len(found) > 1:
        raise UserError(f"released: {base} holds the SeaS pairs of {len(found)} datasets "
                        f"({', '.join(f.name for f in found)}); set options.path to one of them")
    return found[0] if found else base


def layout_root(path: Path, layout: str) -> Path:
    if layout == "anomalydiffusion":
        return anomalydiffusion_root(path)
    if layout == "seas":
        return seas_root(path)
    return path


def _is_type_folder(folder: Path, layout: str) -> bool:
    if layout == "dfmgan":
        return folder.is_dir() and any(DFMGAN_FILE.match(p.stem) for p in folder.iterdir() if is_image(p))
    return (folder / "image").is_dir()


def list_categories(path: Path, layout: str) -> list[str]:
    if not path.is_dir():
        raise UserError(f"released: path {path} does not exist")
    root = layout_root(path, layout)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_types(path: Path, layout: str, category: str) -> list[str]:
    if layout == "synthetic-set":
        return SyntheticSet(path / category).anomaly_types
    folder = layout_root(path, layout) / category
    return sorted(p.name for p in folder.iterdir() if _is_type_folder(p, layout)) if folder.is_dir() else []


def list_pairs(path: Path, layout: str, category: str, anomaly_type: str) -> list[PairRef]:
    """Every pair of one category and type, in numeric order; a UserError when there is none."""
    if not path.is_dir():
        raise UserError(f"released: path {path} does not exist; set options.path to the folder of released pairs")
    if layout == "synthetic-set":
        records = SyntheticSet(path / category).by_type().get(anomaly_type, [])
        pairs = [PairRef(r.image, r.mask, r.image.name) for r in records]
        where = path / category / "index.csv"
    else:
        where = layout_root(path, layout) / category / anomaly_type
        pairs = _dfmgan_pairs(where) if layout == "dfmgan" else _image_mask_pairs(where)
    if not pairs:
        raise UserError(f"released: no pairs of type '{anomaly_type}' in {where}; expected the "
                        f"'{layout}' layout (see `acbench_methods.released.layouts`)")
    return pairs


def _image_mask_pairs(folder: Path) -> list[PairRef]:
    """image/<stem>.* with mask/<stem>.* (AnomalyDiffusion, SeaS)."""
    images = _by_stem(folder / "image")
    masks = _by_stem(folder / "mask")
    stems = sorted(set(images) | set(masks), key=lambda s: natural_key(Path(s)))
    return [PairRef(images.get(s), masks.get(s), f"{folder.name}/{s}") for s in stems]


def _dfmgan_pairs(folder: Path) -> list[PairRef]:
    """<i>_img.png with <i>_mask.png in one folder (DFMGAN's generate.py); other files are ignored."""
    found: dict[int, dict[str, Path]] = {}
    for p in folder.iterdir() if folder.is_dir() else []:
        match = DFMGAN_FILE.match(p.stem) if is_image(p) else None
        if match:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = p
    return [PairRef(found[i].get("img"), found[i].get("mask"), f"{folder.name}/{i}") for i in sorted(found)]


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
