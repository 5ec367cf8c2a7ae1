"""Paired bootstrap over the test images: is one method's image AUROC / AP, or pixel AUROC / AP, ahead of
another's beyond the noise of a finite test set?

Every method of a category and seed is tested on the same real held-out images, so two methods are
compared on the same stratified resamples of those images (paired). Per resample the statistic is the
mean over the shared seeds of metric(better) - metric(worse); in the mean row, the average of the
category statistics (independent draws per category). A pair is separated when the 2.5th percentile
of the statistic is above zero. `MetricTable.separated` combines this test with the one over seeds.

Image metrics come from each job's predictions.csv (image scores); pixel AUROC / AP from its
anomaly_maps.npz, reduced to per-image histograms of anomalous and normal pixel scores whose sums over
the drawn images give the metrics of a resample (`acbench.report.pixels`). AUPRO is not resampled over
images (its per-region overlap curve does not reduce to summable per-image counts): it keeps the test
over seeds, as do the other metrics.

Per-image outputs are used only where they reproduce the table: a job whose predictions.csv (or
anomaly_maps.npz) gives another value than its row in results.csv, beyond CONSISTENCY_TOLERANCE (or
PIXEL_TOLERANCE), is a stale or foreign file and leaves the test over images out for its pairs.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from acbench.report.bootstrap import IMAGE_METRICS, _read_predictions, _stratified_draws, find_predictions
from acbench.report.pixels import MAPS_FILE, PIXEL_TEST_METRICS, read_maps, resample_counts
from acbench.report.tables import BOOTSTRAP_RESAMPLES, MEAN_ROW, MetricTable

#: |metric(predictions.csv) - value in results.csv| above which a job's predictions are not used. The
#: detectors score min-max scaled float32 copies of the saved float64 scores: ties may differ by ~1e-4.
CONSISTENCY_TOLERANCE = 1e-3
#: The same for pixel AUROC / AP, whose test reads per-image histograms of the maps: the binning error
#: (`acbench.report.pixels`: at most 7e-4 for pixel AP on the demo) plus the detector's float32 scaling.
PIXEL_TOLERANCE = 2e-3
#: Cell of a job: metric -> (test-set key, metric on the whole test set, metric per resample).
JobCell = dict[str, tuple[tuple, float, np.ndarray]]


class RunPredictions:
    """The per-image outputs of a run's detector jobs (predictions.csv, and anomaly_maps.npz beside it):
    located once; each file read on first use and reduced at once to its metrics per resample, shared by
    the tables of all its metrics (memory: resampled metrics, never maps)."""

    def __init__(self, run_dir: str | Path, frame: pd.DataFrame) -> None:
        self.root, self.frame = Path(run_dir), frame
        self._paths: dict[tuple[str, str, str, str], Path] | None = None
        self._read: dict[Path, pd.DataFrame | None] = {}
        self._jobs: dict[tuple, JobCell | None] = {}
        self._draws: dict[tuple, tuple[np.ndarray, int]] = {}

    @property
    def paths(self) -> dict[tuple[str, str, str, str], Path]:
        """(detector, label, category, seed) -> path of predictions.csv, seed as text."""
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

    def job(self, metric: str, detector: str, label: str, category: str, seed, resamples: int,
            rng_seed: int) -> JobCell | None:
        """The image metrics (from predictions.csv) or the pixel metrics (from anomaly_maps.npz, read once
        for both) of one job, on the whole test set and per stratified resample of it."""
        pixel = metric in PIXEL_TEST_METRICS
        key = (pixel, detector, label, category, str(seed), resamples, rng_seed)
        if key not in self._jobs:
            compute = self._pixel_cell if pixel else self._image_cell
            self._jobs[key] = compute(detector, label, category, seed, resamples, rng_seed)
        return self._jobs[key]

    def draws(self, category: str, test_set: tuple, resamples: int, rng_seed: int) -> tuple[np.ndarray, int]:
        """Stratified image draws of a category's test set (anomalies first in each row), the same for
        every method and seed; and the number of anomalous images."""
        key = (category, test_set, resamples, rng_seed)
        if key not in self._draws:
            labels = np.asarray(test_set[1])
            rng = np.random.default_rng([rng_seed, zlib.crc32(category.encode())])
            self._draws[key] = (_stratified_draws(labels, resamples, rng), int((labels == 1).sum()))
        return self._draws[key]

    def _image_cell(self, detector, label, category, seed, resamples, rng_seed) -> JobCell | None:
        preds = self.get(detector, label, category, seed)
        if preds is None or preds["file"].duplicated().any():
            return None
        preds = preds.sort_values("file", kind="mergesort")
        labels = preds["label"].to_numpy()
        test_set = (tuple(preds["file"]), tuple(labels.tolist()))
        draws, n_pos = self.draws(category, test_set, resamples, rng_seed)
        order = np.r_[np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)]  # anomalies first, as draws
        scores = preds["score"].to_numpy(dtype=float)
        return {name: (test_set, float(metric(scores[order][None, :], n_pos)[0]), metric(scores[draws], n_pos))
                for name, metric in IMAGE_METRICS.items()}

    def _pixel_cell(self, detector, label, category, seed, resamples, rng_seed) -> JobCell | None:
        path = self.paths.get((detector, label, category, str(seed)))
        read = read_maps(path.with_name(MAPS_FILE)) if path is not None else None
        if read is None or len(set(read[0])) != len(read[0]):
            return None
        files, labels, pos, neg = read
        order = np.argsort(np.asarray(files), kind="mergesort")  # the same image order in every job
        labels, pos, neg = labels[order], pos[order], neg[order]
        test_set = (tuple(files[i] for i in order), tuple(labels.tolist()))
        draws, _ = self.draws(category, test_set, resamples, rng_seed)
        counts = resample_counts(draws, len(files)).astype(np.float64)
        drawn_pos, drawn_neg = counts @ pos, counts @ neg  # (resamples, bins): the drawn images' pixels
        whole_pos, whole_neg = pos.sum(axis=0), neg.sum(axis=0)
        return {name: (test_set, float(metric(whole_pos, whole_neg)), metric(drawn_pos, drawn_neg))
                for name, metric in PIXEL_TEST_METRICS.items()}


class ImageTest:
    """The paired bootstrap over test images of one table (one detector, one metric): image AUROC / AP
    from predictions.csv, pixel AUROC / AP from anomaly_maps.npz (`RunPredictions.job`)."""

    def __init__(self, predictions: RunPredictions, table: MetricTable, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> None:
        self.predictions, self.table = predictions, table
        self.tolerance = PIXEL_TOLERANCE if table.metric in PIXEL_TEST_METRICS else CONSISTENCY_TOLERANCE
        self.resamples, self.seed = resamples, seed
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
        cell = self.predictions.job(self.table.metric, self.table.detector, label, category, seed, self.resamples,
                                    self.seed)
        if cell is None or self.table.metric not in cell:
            return None
        test_set, whole, replicates = cell[self.table.metric]
        if not abs(whole - float(self.table.units[category].at[seed, label])) <= self.tolerance:
            return None  # a stale or foreign file: this pair keeps the test over seeds only
        return test_set, replicates


def attach_image_tests(tables: list[MetricTable], predictions: RunPredictions) -> None:
    """Give every image AUROC / AP and pixel AUROC / AP table of a detector with predictions its test over
    the test images (a job without anomaly_maps.npz leaves its pixel pairs to the test over seeds)."""
    for table in tables:
        tested = table.metric in IMAGE_METRICS or table.metric in PIXEL_TEST_METRICS
        if tested and table.detector and table.direction is not None:
            if table.detector in predictions.detectors():
                table.image_test = ImageTest(predictions, table)


__all__ = ["CONSISTENCY_TOLERANCE", "PIXEL_TOLERANCE", "ImageTest", "RunPredictions", "attach_image_tests"]
