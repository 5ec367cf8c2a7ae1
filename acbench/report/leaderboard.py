"""One leaderboard from several run folders (`acbench compare RUN_DIR... --out DIR`).

Runs made on different clusters, per method or months apart end in one report, provided they measured
the same thing: the dataset, its split, the image size, the number of generated pairs per type and the
metric list must agree (a one-line refusal names the first difference). Every result row keeps the run
it came from (`run` column); a method present in several runs gets the run's name in its label.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from acbench.data.io import atomic_write_text
from acbench.errors import UserError
from acbench.report.bootstrap import MERGED_PREDICTIONS, predictions_path
from acbench.report.load import Run, load_run
from acbench.report.pixels import MAPS_FILE

#: Protocol fields that must agree for numbers to be comparable (dotted paths into the manifest's protocol).
MUST_AGREE = ("dataset.kind", "dataset.split", "dataset.image_size", "dataset.root", "generation.per_type",
              "metrics")


def _field(protocol: dict, dotted: str):
    value = protocol
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _run_names(roots: list[Path]) -> list[str]:
    names = [r.resolve().name for r in roots]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def _merged_variant(method: str, variant: str, run: str, shared: set[tuple[str, str]]) -> str:
    """A row's variant in the merged results: a method measured in several runs carries its run's name."""
    return f"{variant}@{run}" if (method, variant) in shared else variant


def _copy_predictions(run: Run, name: str, shared: set[tuple[str, str]], dest: Path) -> None:
    """Copy the run's detector predictions.csv (and anomaly_maps.npz) under the merged labels, so the merged
    report's intervals and significance tests over test images (which read them) work as in each run's own
    report."""
    frame = run.frame
    if frame.empty:
        return
    detect = frame[(frame["stage"] == "detect") & (frame["anomaly_type"] == "")]
    keys = detect[["detector", "method", "variant", "category", "seed"]].drop_duplicates()
    for det, method, variant, category, seed in keys.itertuples(index=False):
        source = predictions_path(run.root / "artifacts" / "detect", det, method, variant, category, seed)
        if source.is_file():
            target = predictions_path(dest, det, method, _merged_variant(method, variant, name, shared), category, seed)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            if source.with_name(MAPS_FILE).is_file():  # the pixel AUROC / AP test reads the maps beside it
                shutil.copyfile(source.with_name(MAPS_FILE), target.with_name(MAPS_FILE))


def merge_runs(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write a run folder at `out` holding the rows of every run; returns it (render it with render_report)."""
    if len(run_dirs) < 2:
        raise UserError("compare: give at least two run folders")
    out = Path(out)
    roots = [Path(d) for d in run_dirs]
    if any(out.resolve() == r.resolve() for r in roots):
        raise UserError(f"--out {out}: is one of the compared runs; choose a new folder")
    if out.exists() and (out / "artifacts").exists():
        raise UserError(f"--out {out}: holds a study run (artifacts/); choose a new folder")
    runs = [load_run(r) for r in roots]
    base = runs[0]
    for run in runs[1:]:
        for dotted in MUST_AGREE:
            mine, theirs = (_field(r.manifest.get("protocol", {}), dotted) for r in (base, run))
            if mine != theirs:
                raise UserError(f"compare: {run.root} has {dotted} = {theirs!r} but {base.root} has {mine!r}; "
                                "only runs with the same data and metric settings share a leaderboard")
    names = _run_names(roots)
    frames = []
    for run, name in zip(runs, names, strict=True):
        raw = pd.read_csv(run.root / "results.csv", keep_default_na=False, na_values=[""], low_memory=False) \
            if (run.root / "results.csv").is_file() else pd.DataFrame()
        frames.append(raw.assign(run=name))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    shared: set[tuple[str, str]] = set()
    if not rows.empty:  # a method measured in several runs: its label carries the run
        variant = rows["variant"].fillna("").astype(str)
        per_method = rows.assign(_v=variant).groupby(["method", "_v"])["run"].nunique()
        shared = {key for key, n in per_method.items() if n > 1}
        rows["variant"] = [_merged_variant(m, v, r, shared)
                           for m, v, r in zip(rows["method"], variant, rows["run"], strict=True)]
    manifest = dict(base.manifest)
    protocol = dict(manifest.get("protocol", {}))
    protocol["name"] = f"compare of {', '.join(names)}"
    protocol["methods"] = [m for r in runs for m in r.manifest.get("protocol", {}).get("methods", [])]
    manifest.update(protocol=protocol, protocol_file=None,
                    compared_runs=[{"run": n, "path": str(r.root.resolve()),
                                    "protocol_hash": r.manifest.get("protocol_hash"),
                                    "git_commit": r.manifest.get("git_commit")} for n, r in zip(names, runs)],
                    categories=sorted({c for r in runs for c in r.manifest.get("categories", [])}))
    out.mkdir(parents=True, exist_ok=True)
    for run, name in zip(runs, names, strict=True):
        _copy_predictions(run, name, shared, out / MERGED_PREDICTIONS)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str))
    atomic_write_text(out / "results.csv", rows.to_csv(index=False))
    return out
