"""Reports rendered from a run folder's results.csv and manifest (`acbench report RUN_DIR`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from acbench.data.io import atomic_write_text, save_png
from acbench.errors import UserError
from acbench.synthesis import SyntheticSet
from acbench.weights import RANDOM_MARK

__all__ = ["render_report"]


def _load(run_dir: Path) -> tuple[pd.DataFrame, dict]:
    results, manifest = run_dir / "results.csv", run_dir / "manifest.json"
    if not manifest.is_file():
        raise UserError(f"{run_dir}: not a run folder (manifest.json missing)")
    frame = pd.read_csv(results, keep_default_na=False) if results.is_file() and results.stat().st_size > 1 \
        else pd.DataFrame()
    return frame, json.loads(manifest.read_text())


def method_label(row: pd.Series) -> str:
    variant = row.get("variant", "")
    return f"{row['method']}/{variant}" if variant else str(row["method"])


def category_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """metric (and detector) -> table of categories x methods, category-level values, mean row."""
    if frame.empty:
        return {}
    frame = frame[frame["anomaly_type"].astype(str) == ""].copy()
    frame["label"] = frame.apply(method_label, axis=1)
    frame["table"] = frame.apply(lambda r: f"{r['metric']} ({r['detector']})" if r["detector"] else r["metric"],
                                 axis=1)
    tables = {}
    for name, part in frame.groupby("table", sort=True):
        table = part.pivot_table(index="category", columns="label", values="value", aggfunc="mean")
        table.loc["mean"] = table.mean(numeric_only=True)
        tables[str(name)] = table
    return tables


def _markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| category | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for idx, row in table.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.4g}" for v in row]
        lines.append(f"| {idx} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = 0.5 * out[mask] + 0.5 * np.array([255, 0, 0], np.float32)
    return out.astype(np.uint8)


def sample_grid(synthetic: SyntheticSet, per_type: int) -> np.ndarray:
    """Rows of (image | mask overlay) pairs: `per_type` samples of each anomaly type."""
    rows = []
    for _atype, records in sorted(synthetic.by_type().items()):
        tiles = []
        for rec in records[:per_type]:
            image, mask = rec.load()
            tiles += [image, _overlay(image, mask)]
        rows.append(tiles)
    height = max(t.shape[0] for row in rows for t in row)
    width = max(len(row) for row in rows)
    size = rows[0][0].shape[1]
    grid = np.full((height * len(rows), size * width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            grid[r * height : r * height + tile.shape[0], c * size : c * size + tile.shape[1]] = tile
    return grid


def _random_weights(frame: pd.DataFrame, run_dir: Path) -> list[str]:
    notes = []
    for col in ("weights", "generator_weights"):
        if col in frame.columns and (frame[col].astype(str) == "random").any():
            notes.append(col)
    for marker in (run_dir / "artifacts").rglob("DONE.json"):
        prov = json.loads(marker.read_text()).get("provenance", {})
        if prov.get("random_weights"):
            notes.append(marker.parent.relative_to(run_dir).as_posix())
    return sorted(set(notes))


def render_report(run_dir: str | Path, samples_per_type: int = 3) -> Path:
    """Write report/index.md (tables) and report/samples/*.png (grids); returns the index path."""
    run_dir = Path(run_dir)
    frame, manifest = _load(run_dir)
    out = run_dir / "report"
    lines = [f"# {manifest['protocol']['name']}", ""]
    random_parts = _random_weights(frame, run_dir)
    if random_parts:
        lines += [f"> **{RANDOM_MARK.upper()}**: some networks ran on random weights "
                  f"({', '.join(random_parts[:6])}{' …' if len(random_parts) > 6 else ''}).", ""]
    split = manifest.get("split", {})
    lines += [f"- protocol hash `{manifest['protocol_hash']}`, acbench {manifest['versions']['acbench']}, "
              f"torch {manifest['versions'].get('torch')}, device {manifest.get('device')}",
              f"- seeds {manifest['seeds']}, categories {', '.join(manifest['categories'])}",
              f"- split: fraction {split.get('fraction')} ({split.get('order')})"
              + (", **legacy overlap** (AnomalyDiffusion code: one image per type on both sides)"
                 if split.get("legacy_overlap") else ", synthesis and evaluation disjoint"),
              f"- weights policy: {manifest.get('weights_policy')}"]
    if manifest.get("failed_jobs"):
        lines.append(f"- **failed jobs**: {', '.join(manifest['failed_jobs'])} (see logs/)")
    lines.append("")
    for name, table in category_tables(frame).items():
        lines += [f"## {name}", "", _markdown(table), ""]
    grids = []
    gen_root = run_dir / "artifacts" / "generate"
    for index in sorted(gen_root.glob("*/*/*/index.csv")) if gen_root.is_dir() else []:
        method, category, seed = index.parent.relative_to(gen_root).parts
        name = f"{method}_{category}_seed{seed}.png".replace("@", "-")
        save_png(out / "samples" / name, sample_grid(SyntheticSet(index.parent), samples_per_type))
        grids.append((method.replace("@", "/"), category, seed, name))
    if grids:
        lines += ["## Samples (image | mask overlay, one row per anomaly type)", ""]
        for method, category, seed, name in grids:
            lines += [f"### {method} — {category} (seed {seed})", "", f"![{method} {category}](samples/{name})", ""]
    index_path = out / "index.md"
    atomic_write_text(index_path, "\n".join(lines) + "\n")
    return index_path
