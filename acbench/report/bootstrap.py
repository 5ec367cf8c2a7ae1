"""95% bootstrap confidence intervals of image-level detection metrics over the test images.

Reads the `predictions.csv` each detector job keeps (one row per test image: file, label, score),
so intervals need no re-training. Resampling is stratified (normal and anomalous images separately)
so every replicate has both classes; the same image draws are used for every seed of a cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

# Hand-written, vectorised over replicates: scikit-learn's per-call input checks cost ~1 ms, i.e. minutes
# for 1000 resamples x every cell; the tests check both functions against scikit-learn.


def auroc_replicates(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """AUROC of each row of `scores` whose first n_pos columns are the anomalies (Mann-Whitney U,
    ties counted half, exactly scikit-learn's roc_auc_score)."""
    n_neg = scores.shape[1] - n_pos
    ranks = rankdata(scores, axis=1)
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's average_precision_score: sum over distinct thresholds of (R_n - R_n-1) * P_n."""
    order = np.argsort(-scores, kind="mergesort")
    labels, scores = labels[order], scores[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores)), labels.size - 1]
    tp = np.cumsum(labels)[last_of_group]
    precision = tp / (last_of_group + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ap_replicates(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """`average_precision` of each row of `scores` (first n_pos columns the anomalies), vectorised:
    AP = mean over anomalies of the precision at the last position of their group of tied scores."""
    n = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="mergesort")
    ranked = np.take_along_axis(scores, order, axis=1)
    positive = order < n_pos
    tp = np.cumsum(positive, axis=1)
    ends = np.ones_like(positive)
    ends[:, :-1] = ranked[:, 1:] != ranked[:, :-1]  # last position of each group of tied scores
    # each position's group end: the first end at or after it (a reversed running minimum)
    end = np.minimum.accumulate(np.where(ends, np.arange(n), n)[:, ::-1], axis=1)[:, ::-1]
    precision = np.take_along_axis(tp, end, axis=1) / (end + 1)
    return (precision * positive).sum(axis=1) / n_pos


IMAGE_METRICS = {"image_auroc": auroc_replicates, "image_ap": ap_replicates}
SCORE_COLUMNS = ("score", "image_score", "pred_score")


def _read_predictions(path: Path) -> pd.DataFrame | None:
    frame = pd.read_csv(path)
    score = next((c for c in SCORE_COLUMNS if c in frame.columns), None)
    if score is None or "label" not in frame.columns:
        return None
    key = "file" if "file" in frame.columns else frame.columns[0]
    out = pd.DataFrame({"file": frame[key].astype(str), "label": frame["label"].astype(int),
                        "score": frame[score].astype(float)})
    return out if out["label"].nunique() == 2 else None


#: Where a merged leaderboard (`acbench compare`) keeps copies of its runs' predictions.csv, laid out as
#: a run's `artifacts/detect` folder under the merged labels.
MERGED_PREDICTIONS = "predictions"


def predictions_path(root: Path, detector: str, method: str, variant: str, category: str, seed) -> Path:
    """A detector job's predictions.csv below `root` (a run's `artifacts/detect`, or a merged folder's
    `predictions`)."""
    label_dir = f"{method}@{variant}" if variant else method
    return root / detector.replace("/", "@") / label_dir / str(category) / str(seed) / "predictions.csv"


def find_predictions(run_dir: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per detector artifact with a usable predictions.csv: detector, label, category, seed, path.
    Looks in the run's artifacts, then in the copies a merged leaderboard keeps."""
    rows = []
    detect = frame[(frame["stage"] == "detect") & (frame["anomaly_type"] == "")] if "stage" in frame else frame
    keys = detect[["detector", "method", "variant", "label", "category", "seed"]].drop_duplicates()
    roots = (run_dir / "artifacts" / "detect", run_dir / MERGED_PREDICTIONS)
    for det, method, variant, label, category, seed in keys.itertuples(index=False):
        path = next((p for p in (predictions_path(r, det, method, variant, category, seed) for r in roots)
                     if p.is_file()), None)
        if path is not None:
            rows.append((det, label, category, seed, path))
    return pd.DataFrame(rows, columns=["detector", "label", "category", "seed", "path"])


def _stratified_draws(labels: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    return np.concatenate([rng.choice(pos, (n_boot, pos.size)), rng.choice(neg, (n_boot, neg.size))], axis=1)


def cell_interval(per_seed: list[pd.DataFrame], metric: str, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the seed-mean of `metric` over stratified image resamples."""
    files = sorted(set.intersection(*(set(p["file"]) for p in per_seed)))
    aligned = [p.set_index("file").loc[files] for p in per_seed]
    labels = aligned[0]["label"].to_numpy()
    draws = _stratified_draws(labels, n_boot, np.random.default_rng(seed))  # anomalies first in each row
    n_pos = int((labels == 1).sum())
    stats = np.mean([IMAGE_METRICS[metric](p["score"].to_numpy()[draws], n_pos) for p in aligned], axis=0)
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_intervals(run_dir: Path, frame: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """detector, metric, label, category, low, high for every cell with predictions (category rows only;
    the mean row pools the categories' replicates by averaging their metric)."""
    found = find_predictions(run_dir, frame) if not frame.empty else pd.DataFrame()
    out = []
    if found.empty:
        return pd.DataFrame(columns=["detector", "metric", "label", "category", "low", "high"])
    for (det, label, category), part in found.groupby(["detector", "label", "category"]):
        preds = [p for p in (_read_predictions(Path(x)) for x in part["path"]) if p is not None]
        if not preds:
            continue
        for metric in IMAGE_METRICS:
            low, high = cell_interval(preds, metric, n_boot)
            out.append((det, metric, label, category, low, high))
    return pd.DataFrame(out, columns=["detector", "metric", "label", "category", "low", "high"])


__all__ = ["auroc_replicates", "average_precision", "bootstrap_intervals", "cell_interval"]
