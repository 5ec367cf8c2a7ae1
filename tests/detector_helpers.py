"""Checks shared by the detector tests: saved raw outputs against the ground-truth files and the rows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from acbench.data.io import load_mask
from acbench.detectors.metrics import detection_metrics


def check_saved_outputs(workdir: Path, data, rows: dict, size: int) -> None:
    """predictions.csv + anomaly_maps.npz recompute every reported row, and each saved mask is the
    ground-truth file of the image on its line (read here from the dataset, not from the detector)."""
    with (workdir / "predictions.csv").open() as fh:
        predictions = list(csv.DictReader(fh))
    saved = np.load(workdir / "anomaly_maps.npz")
    assert list(saved["files"]) == [p["file"] for p in predictions]
    truth = {e.image_path.resolve(): e.mask_path for ex in data.eval_anomalies.values() for e in ex}
    for i, p in enumerate(predictions):
        path = (data.root / p["file"]).resolve()
        want = load_mask(truth[path], size) if path in truth else np.zeros((size, size), bool)
        assert int(p["label"]) == int(path in truth), p["file"]
        assert np.array_equal(saved["masks"][i], want), p["file"]
    labels = np.array([int(p["label"]) for p in predictions])
    scores = np.array([float(p["score"]) for p in predictions])
    again = detection_metrics(labels, scores, saved["masks"], saved["maps"])
    assert set(again) == set(rows)
    for name, value in again.items():
        assert value == pytest.approx(rows[name].value, abs=1e-6), name
