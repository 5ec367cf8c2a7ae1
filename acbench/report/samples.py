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


GAP = 3  # white pixels between tiles; three times that between samples
DPI = 100  # with figure sizes in pixels / DPI, one image pixel is one PNG pixel


def _column_x(column: int, size: int) -> int:
    return column * (size + GAP) + (column // 3) * 2 * GAP


def mosaic(chosen: dict[str, list[SyntheticRecord]], dataset_root: Path | None, size: int) -> np.ndarray:
    """All tiles in one image: a row per method, (normal, generated, overlay) per sample."""
    columns = 3 * max(len(v) for v in chosen.values())
    height = len(chosen) * (size + GAP) - GAP
    out = np.full((height, _column_x(columns, size) - GAP - 2 * GAP * (columns % 3 == 0), 3), 255, np.uint8)
    for row, records in enumerate(chosen.values()):
        y = row * (size + GAP)
        for i, record in enumerate(records):
            image, mask = record.load(size)
            tiles = (_normal(record, dataset_root, image.shape), image, overlay(image, mask))
            for j, tile in enumerate(tiles):
                x = _column_x(3 * i + j, size)
                out[y:y + size, x:x + size] = tile
    return out


def sample_grid(category: str, anomaly_type: str, sets: dict[str, SyntheticSet], k: int,
                dataset_root: Path | None, stem: Path) -> Path | None:
    """One figure: the mosaic with method names on the left and column names on top (PNG + PDF)."""
    by_method = {m: s.by_type().get(anomaly_type, []) for m, s in sets.items()}
    chosen = shared_choice({m: r for m, r in by_method.items() if r}, k)
    if not chosen:
        return None
    size = next(iter(chosen.values()))[0].load()[0].shape[0]
    image = mosaic(chosen, dataset_root, size)
    left, top = 12 + 7 * max(len(m) for m in chosen), 46
    width, height = image.shape[1] + left + 8, image.shape[0] + top + 4
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes((left / width, 4 / height, image.shape[1] / width, image.shape[0] / height))
    ax.imshow(image, interpolation="none")
    columns = 3 * max(len(v) for v in chosen.values())
    ax.set_xticks([_column_x(c, size) + size / 2 for c in range(columns)],
                  [("normal", "generated", "mask overlay")[c % 3] for c in range(columns)], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([r * (size + GAP) + size / 2 for r in range(len(chosen))], list(chosen), fontsize=8)
    ax.tick_params(length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.text(0.5, 1 - 6 / height, f"{category} — {anomaly_type}", ha="center", va="top", fontsize=10)
    return save(fig, stem, dpi=DPI, tight=False)


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
