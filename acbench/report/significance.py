"""Paired bootstrap over the test images: is one method's image AUROC / AP ahead of another's beyond
the noise of a finite test set?

Every method of a category and seed is tested on the same real held-out images, so two methods are
compared on the same stratified resamples of those images (paired). Per resample the statistic is the
mean over the shared seeds of metric(better) - metric(worse); in the mean row, the average of the
category statistics (independent draws per category). A pair is separated when the 2.5th percentile
of the statistic is above zero. `MetricTable.separated` combines this test with the one over seeds.

Predictions are used only where they reproduce the table: a job whose predictions.csv gives another
value than its row in results.csv (a stale or foreign file) leaves the image test out for its pairs.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from acbench.report.bootstrap import IMAGE_METRICS, _read_predictions, _stratified_draws, find_predictions
from acbench.report.tables import BOOTSTRAP_RESAMPLES, MEAN_ROW, MetricTable

#: |metric(predictions.csv) - value in results.csv| above which a job's predictions are not used. The
#: detectors score min-max scaled float32 copies of the saved float64 scores: ties may differ by ~1e-4.
CONSISTENCY_TOLERANCE = 1e-3


class RunPredictions:
    """The predictions.csv of a run's detector jobs: located once, each file read on first use."""

    def __init__(self, run_dir: str | Path, frame: pd.DataFrame) -> None:
        self.root, self.frame = Path(run_dir), frame
        self._paths: dict[tuple[str, str, str, str], Path] | None = None
        self._read: dict[Path, pd.DataFrame | None] = {}

    @property
    def paths(self) -> dict[tuple[str, str, str, str], Path]:
        """(detector, label, category, seed) -> path, seed as text."""
        if self._paths is None:
            found = find_predictions(self.root, self.frame) if not self.frame.empty else pd.DataFrame()
            self._paths = {(str(d), str(lb), str(c), str(s)): Path(p) for d, lb, c, s, p in
                           found.itertuples(index=False)} if not found.empty else {}
        return self._paths

    def detectors(self) -> set[str]:
        return {key[0] for key in self.paths}

    def get(self, detector: str, label: str, category: str, seed) -> pd.DataFrame | None:
        path = self.paths.get((detector, label, category, str(seed)))
        if path is None:
            return None
        if path not in self._read:
            self._read[path] = _read_predictions(path)
        return self._read[path]


class ImageTest:
    """The paired image-level bootstrap of one table (one detector, one image metric)."""

    def __init__(self, predictions: RunPredictions, table: MetricTable, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> None:
        self.predictions, self.table = predictions, table
        self.metric = IMAGE_METRICS[table.metric]
        self.resamples, self.seed = resamples, seed
        self._draws: dict[tuple[str, tuple], tuple[np.ndarray, int]] = {}
        self._cells: dict[tuple[str, str, str], tuple[tuple, np.ndarray] | None] = {}
        self._lows: dict[tuple[str, str, str, int], float | None] = {}

    def low(self, row: str, better: str, worse: str, sign: int) -> float | None:
        """2.5th percentile of the paired statistic (oriented by `sign`); None where no image test applies."""
        key = (row, better, worse, sign)
        if key not in self._lows:
            reps = self.replicates(row, better, worse)
            self._lows[key] = None if reps is None else float(np.percentile(sign * reps, 2.5))
        return self._lows[key]

    def replicates(self, row: str, better: str, worse: str) -> np.ndarray | None:
        """Per resample: the seed-mean difference better - worse (mean row: averaged over categories)."""
        if row != MEAN_ROW:
            return self._category(row, better, worse)
        categories = [c for c, u in self.table.units.items() if c != MEAN_ROW and better in u and worse in u
                      and not u[[better, worse]].dropna().empty]
        stats = [self._category(c, better, worse) for c in categories]
        if not stats or any(s is None for s in stats):  # a category without a test would bias the average
            return None
        return np.mean(stats, axis=0)

    def _category(self, category: str, better: str, worse: str) -> np.ndarray | None:
        units = self.table.units.get(category)
        if units is None or better not in units or worse not in units:
            return None
        pairs = units[[better, worse]].dropna()
        if pairs.empty:
            return None
        diffs = []
        for seed in pairs.index:
            a, b = self._cell(category, better, seed), self._cell(category, worse, seed)
            if a is None or b is None or a[0] != b[0]:  # missing, inconsistent, or not the same test images
                return None
            diffs.append(a[1] - b[1])
        return np.mean(diffs, axis=0)

    def _cell(self, category: str, label: str, seed) -> tuple[tuple, np.ndarray] | None:
        """(test-set key, metric per resample) of one job, or None without usable predictions."""
        key = (category, label, str(seed))
        if key not in self._cells:
            self._cells[key] = self._compute_cell(category, label, seed)
        return self._cells[key]

    def _compute_cell(self, category: str, label: str, seed) -> tuple[tuple, np.ndarray] | None:
        preds = self.predictions.get(self.table.detector, label, category, seed)
        if preds is None or preds["file"].duplicated().any():
            return None
        preds = preds.sort_values("file", kind="mergesort")
        files, labels = tuple(preds["file"]), preds["label"].to_numpy()
        test_set = (files, tuple(labels.tolist()))
        draws, n_pos = self._draws_for(category, test_set)
        order = np.r_[np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)]  # anomalies first, as draws
        scores = preds["score"].to_numpy(dtype=float)
        whole = float(self.metric(scores[order][None, :], n_pos)[0])
        if not abs(whole - float(self.table.units[category].at[seed, label])) <= CONSISTENCY_TOLERANCE:
            return None
        return test_set, self.metric(scores[draws], n_pos)

    def _draws_for(self, category: str, test_set: tuple) -> tuple[np.ndarray, int]:
        """Stratified image draws of a category's test set, the same for every method and seed."""
        key = (category, test_set)
        if key not in self._draws:
            labels = np.asarray(test_set[1])
            rng = np.random.default_rng([self.seed, zlib.crc32(category.encode())])
            self._draws[key] = (_stratified_draws(labels, self.resamples, rng), int((labels == 1).sum()))
        return self._draws[key]


def attach_image_tests(tables: list[MetricTable], predictions: RunPredictions) -> None:
    """Give every image-metric table of a detector with predictions its image-level test."""
    for table in tables:
        if table.metric in IMAGE_METRICS and table.detector and table.direction is not None:
            if table.detector in predictions.detectors():
                table.image_test = ImageTest(predictions, table)


__all__ = ["CONSISTENCY_TOLERANCE", "ImageTest", "RunPredictions", "attach_image_tests"]
