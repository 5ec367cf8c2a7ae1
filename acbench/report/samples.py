"""Sample grids: per category and defect type, one row per method, each sample shown as
normal | generated | mask overlay. Methods are shown on the same source normal images wherever their
synthetic sets share them, so the eye compares methods, not backgrounds."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion

from acbench.data.io import load_rgb
from acbench.errors import UserError
from acbench.report.figures import plt, save
from acbench.synthesis import SyntheticRecord, SyntheticSet

log = logging.getLogger(__name__)
CONTOUR_COLOUR = np.array([255, 230, 0], np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, dim: float = 0.35) -> np.ndarray:
    """The image dimmed outside the mask, with the mask outline in yellow: readable on any texture
    colour (a red tint vanishes on brick, a green one on grass)."""
    out = image.astype(np.float32)
    out[~mask] *= dim
    out = out.astype(np.uint8)
    out[mask & ~binary_erosion(mask)] = CONTOUR_COLOUR
    return out


def _seed_order(index: Path) -> tuple[str, str, int]:
    method, category, seed = index.parts[-4:-1]
    return method, category, int(seed) if seed.isdigit() else 0


def synthetic_sets(run_dir: Path) -> dict[str, dict[str, SyntheticSet]]:
    """category -> method label -> the synthetic set of the lowest seed."""
    root = run_dir / "artifacts" / "generate"
    found: dict[str, dict[str, SyntheticSet]] = {}
    indexes = sorted(root.glob("*/*/*/index.csv"), key=_seed_order) if root.is_dir() else []
    for index in indexes:
        method, category = index.parts[-4].replace("@", "/"), index.parts[-3]
        if method in found.get(category, {}):
            continue
        try:
            found.setdefault(category, {})[method] = SyntheticSet(index.parent)
        except UserError as exc:  # a damaged artifact must not hide the other methods' samples
            log.warning("sample grid skips %s: %s", index.parent, exc)
    return found


def shared_choice(by_method: dict[str, list[SyntheticRecord]], k: int) -> dict[str, list[SyntheticRecord]]:
    """k records per method, preferring source normals that most methods used."""
    counts = Counter(name for recs in by_method.values() for name in {r.source_normal for r in recs} if name)
    preferred = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:k]
    chosen = {}
    for method, records in by_method.items():
        picks = [next((r for r in records if r.source_normal == name), None) for name in preferred]
        rest = iter(r for r in records if r not in picks)
        chosen[method] = [p if p is not None else next(rest, None) for p in picks] if preferred else records[:k]
        chosen[method] = [p for p in chosen[method] if p is not None]
    return chosen


def _normal(record: SyntheticRecord, dataset_root: Path | None, shape: tuple[int, ...]) -> np.ndarray:
    if dataset_root is not None and record.source_normal:
        path = dataset_root / record.source_normal
        if path.is_file():
            return load_rgb(path, shape[0]) if shape[0] == shape[1] else load_rgb(path)
    return np.full(shape, 235, np.uint8)  # unknown source: a light grey tile


def sample_grid(category: str, anomaly_type: str, sets: dict[str, SyntheticSet], k: int,
                dataset_root: Path | None, stem: Path) -> Path | None:
    by_method = {m: s.by_type().get(anomaly_type, []) for m, s in sets.items()}
    chosen = shared_choice({m: r for m, r in by_method.items() if r}, k)
    if not chosen:
        return None
    cols = 3 * max(len(v) for v in chosen.values())
    tile_px = next(iter(chosen.values()))[0].load()[0].shape[0]
    fig, axes = plt.subplots(len(chosen), cols, figsize=(1.15 * cols, 1.25 * len(chosen)), squeeze=False)
    for row, (method, records) in enumerate(chosen.items()):
        for i, record in enumerate(records):
            image, mask = record.load()
            tiles = (_normal(record, dataset_root, image.shape), image, overlay(image, mask))
            for j, tile in enumerate(tiles):
                axes[row, 3 * i + j].imshow(tile)
                if row == 0:
                    axes[row, 3 * i + j].set_title(("normal", "generated", "mask overlay")[j], fontsize=7)
        axes[row, 0].set_ylabel(method, fontsize=7, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
    height = 1.25 * len(chosen)
    fig.suptitle(f"{category} — {anomaly_type}", fontsize=9, y=1 - 0.08 / height)
    fig.subplots_adjust(wspace=0.04, hspace=0.08, top=1 - 0.5 / height)
    return save(fig, stem, dpi=max(100.0, tile_px / 1.1))  # about one screen pixel per image pixel


def all_sample_grids(run_dir: Path, out: Path, k: int, dataset_root: Path | None,
                     order: list[str] | None = None) -> list[tuple[str, str, Path]]:
    """One grid per category x defect type; method rows in `order` (the protocol's), others after."""
    grids = []
    rank = {label: i for i, label in enumerate(order or [])}
    for category, unordered in sorted(synthetic_sets(run_dir).items()):
        sets = dict(sorted(unordered.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
        types = sorted({t for s in sets.values() for t in s.anomaly_types})
        for anomaly_type in types:
            path = sample_grid(category, anomaly_type, sets, k, dataset_root, out / f"{category}_{anomaly_type}")
            if path is not None:
                grids.append((category, anomaly_type, path))
    return grids
