"""Reading a run folder for the report: results.csv, manifest.json, metric directions, weights used."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from acbench.errors import UserError

#: Direction of the standard metric names (True: higher is better, False: lower, None: descriptive).
#: Metrics not listed here take the `higher_is_better` attribute of their registered plugin class.
DIRECTIONS: dict[str, bool | None] = {
    "is": True, "ic_lpips": True, "ic_lpips_nonzero": True, "ic_lpips_ad": True,
    "fid": False, "kid": False,
    "mask_precision": True, "mask_recall": True, "n_pairs": None, "mask_area": None,
    "image_auroc": True, "image_ap": True, "image_f1max": True, "pixel_auroc": True, "pixel_ap": True,
    "pixel_f1max": True, "aupro": True, "accuracy": True,
}

#: Metrics in [0, 1] that papers print as percentages.
PERCENT_METRICS = {"image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max",
                   "aupro", "accuracy"}

#: How the literature writes the standard metric names in table headers.
DISPLAY_NAMES = {
    "is": "IS", "ic_lpips": "IC-LPIPS", "ic_lpips_nonzero": "IC-LPIPS (non-zero clusters)",
    "ic_lpips_ad": "IC-LPIPS (AnomalyDiffusion)", "fid": "FID", "kid": "KID",
    "mask_precision": "mask precision", "mask_recall": "mask recall", "n_pairs": "pairs",
    "mask_area": "mask area", "image_auroc": "image AUROC", "image_ap": "image AP",
    "image_f1max": "image F1-max", "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP",
    "pixel_f1max": "pixel F1-max", "aupro": "AUPRO", "accuracy": "accuracy",
}

#: Metrics scored against pixel masks: rows whose synthetic masks are boxes (`synthetic_masks: box`) get a mark.
PIXEL_METRICS = {"pixel_auroc", "pixel_ap", "pixel_f1max", "aupro", "mask_precision", "mask_recall"}

DOWNSTREAM_SCOPES = {"image", "pixel", "classification"}
NO_METHOD = "none"


def metric_direction(metric: str) -> bool | None:
    """True / False / None for higher-better / lower-better / descriptive."""
    if metric in DIRECTIONS:
        return DIRECTIONS[metric]
    from acbench import registry

    for name in registry.names("metrics"):
        stem = name.replace("-", "_")
        if metric == stem or metric.startswith(stem + "_"):
            try:
                return getattr(registry.load("metrics", name), "higher_is_better", None)
            except (ImportError, AttributeError, UserError):  # a broken plugin must not break the report
                return None
    return None


def display_name(metric: str) -> str:
    return DISPLAY_NAMES.get(metric, metric)


def arrow(direction: bool | None) -> str:
    return {True: "↑", False: "↓"}.get(direction, "")


@dataclass
class Run:
    """Everything the report reads from one run folder."""

    root: Path
    frame: pd.DataFrame
    manifest: dict
    random_parts: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.manifest.get("protocol", {}).get("name", self.root.name)

    @property
    def methods_config(self) -> list[dict]:
        return self.manifest.get("protocol", {}).get("methods", [])


def _text_columns(frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("method", "variant", "category", "detector", "anomaly_type", "metric", "scope"):
        if col not in frame.columns:
            frame[col] = ""
        frame[col] = frame[col].fillna("").astype(str)
    if "seed" not in frame.columns:
        frame["seed"] = 0
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame["label"] = [f"{m}/{v}" if v else m for m, v in zip(frame["method"], frame["variant"], strict=True)]
    return frame


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Normalise a long-format results frame (missing columns, NaN text, method labels)."""
    return _text_columns(frame.copy()) if not frame.empty else frame


def load_run(run_dir: str | Path) -> Run:
    root = Path(run_dir)
    manifest_path, results = root / "manifest.json", root / "results.csv"
    if not manifest_path.is_file():
        raise UserError(f"{root}: not a run folder (manifest.json missing); pass the folder `acbench run` wrote")
    manifest = json.loads(manifest_path.read_text())
    frame = pd.DataFrame()
    if results.is_file() and results.stat().st_size > 1:
        frame = pd.read_csv(results, keep_default_na=False, na_values=[""], low_memory=False)
    frame = prepare(frame)
    return Run(root, frame, manifest, random_weight_parts(frame, root))


def random_weight_parts(frame: pd.DataFrame, root: Path | None = None) -> list[str]:
    """What ran on random weights: 'weights'/'generator_weights' columns and artifact provenance."""
    parts = set()
    for col in ("weights", "generator_weights"):
        if not frame.empty and col in frame.columns:
            hit = frame[frame[col].astype(str) == "random"]
            for label, detector in hit[["label", "detector"]].drop_duplicates().itertuples(index=False):
                what = "generator" if col == "generator_weights" else (detector or "quality metrics")
                parts.add(f"{label}: {what}")
    artifacts = root / "artifacts" if root is not None else None
    if artifacts is not None and artifacts.is_dir():
        for marker in artifacts.rglob("DONE.json"):
            try:
                prov = json.loads(marker.read_text()).get("provenance", {})
            except (OSError, ValueError):
                continue
            if isinstance(prov, dict) and prov.get("random_weights"):
                parts.add(marker.parent.relative_to(root).as_posix())
    return sorted(parts)


def random_labels(frame: pd.DataFrame) -> set[str]:
    """Method labels with at least one row computed with random weights."""
    labels = set()
    for col in ("weights", "generator_weights"):
        if not frame.empty and col in frame.columns:
            labels |= set(frame.loc[frame[col].astype(str) == "random", "label"])
    return labels


def box_labels(frame: pd.DataFrame) -> set[str]:
    """Method labels whose synthetic masks are boxes (a SyntheticSet with `mask_kind: box`)."""
    if frame.empty or "synthetic_masks" not in frame.columns:
        return set()
    return set(frame.loc[frame["synthetic_masks"].astype(str) == "box", "label"])


def weights_used(frame: pd.DataFrame) -> pd.DataFrame:
    """label x detector -> the weights values seen (for the manifest summary)."""
    cols = [c for c in ("weights", "generator_weights") if not frame.empty and c in frame.columns]
    if not cols:
        return pd.DataFrame(columns=["method", "detector", *cols])
    part = frame[["label", "detector", *cols]].fillna("").astype(str).replace({"nan": ""})
    out = part.groupby(["label", "detector"], sort=True).agg(lambda s: ", ".join(sorted(set(s) - {""})))
    return out.reset_index().rename(columns={"label": "method"})

RANDOM_NOTE_SHORT = "random weights — not comparable"
