"""Marks of pixel AUROC / AP decided by a paired bootstrap over the test images, from per-image histograms
of the saved anomaly maps: maps written by hand, table values computed from them with scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_helpers import manifest, write_maps, write_predictions, write_run
from sklearn.metrics import average_precision_score, roc_auc_score

from acbench.report.load import prepare
from acbench.report.pixels import PIXEL_TEST_METRICS, bin_edges, image_histograms
from acbench.report.significance import PIXEL_TOLERANCE, RunPredictions, attach_image_tests
from acbench.report.tables import TEST_IMAGES, build_tables

DETECTOR = "unet-localization"
SIZE = 16
SKLEARN = {"pixel_auroc": roc_auc_score, "pixel_ap": average_precision_score}


def _masks(n_pos: int, n_neg: int, seed: int = 0) -> np.ndarray:
    """Anomalous images first, each with one random rectangle; then normal images (empty masks)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_pos + n_neg, SIZE, SIZE), bool)
    for i in range(n_pos):
        y, x = rng.integers(0, SIZE - 6, 2)
        h, w = rng.integers(2, 7, 2)
        masks[i, y:y + h, x:x + w] = True
    return masks


def _maps(masks: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Anomalous pixels one unit above normal ones plus Gaussian noise: larger noise, lower pixel metrics."""
    return masks + np.random.default_rng(seed).normal(0, noise, masks.shape)


def _rows(maps: dict[str, list[np.ndarray]], masks: np.ndarray, aupro: dict[str, float] | None = None) -> pd.DataFrame:
    """Result rows (category bottle) whose pixel AUROC / AP are scikit-learn's on the pooled pixels."""
    rows = []
    for label, per_seed in maps.items():
        for seed, m in enumerate(per_seed):
            values = {k: fn(masks.ravel(), m.ravel()) for k, fn in SKLEARN.items()}
            if aupro:
                values["aupro"] = aupro[label]
            for metric, value in values.items():
                rows.append({"method": label, "variant": "", "category": "bottle", "seed": seed, "stage": "detect",
                             "detector": DETECTOR, "anomaly_type": "", "metric": metric, "scope": "pixel",
                             "value": value, "weights": "pretrained"})
    return pd.DataFrame(rows)


def _write(root, maps: dict[str, list[np.ndarray]], masks: np.ndarray) -> None:
    labels = masks.reshape(len(masks), -1).any(axis=1).astype(int)
    for label, per_seed in maps.items():
        for seed, m in enumerate(per_seed):
            write_predictions(root, DETECTOR, label, "bottle", seed, labels, m.reshape(len(m), -1).max(axis=1))
            write_maps(root, DETECTOR, label, "bottle", seed, m, masks)


def _study(root, maps, masks, aupro=None, tested: bool = True):
    _write(root, maps, masks)
    frame = prepare(_rows(maps, masks, aupro))
    tables = build_tables(frame)
    if tested:
        attach_image_tests(tables, RunPredictions(root, frame))
    return {t.metric: t for t in tables}


def test_histogram_metrics_match_scikit_learn_on_the_pooled_pixels_of_a_resample():
    masks = _masks(10, 10)
    maps = _maps(masks, 0.8, 1).astype(np.float32).astype(np.float64)  # float32 ties, as the saved maps
    pos, neg = image_histograms(maps, masks)
    edges = bin_edges(maps, masks)
    rng = np.random.default_rng(3)
    for _ in range(5):
        draw = np.r_[rng.choice(10, 10), rng.choice(np.arange(10, 20), 10)]  # stratified, with repeats
        counts = np.bincount(draw, minlength=20).astype(float)
        y, x = masks[draw].ravel(), maps[draw].ravel()
        binned = np.searchsorted(edges, x, side="right")  # the score a pixel keeps: its bin
        for name, fn in PIXEL_TEST_METRICS.items():
            got = float(fn(counts @ pos, counts @ neg))
            assert got == pytest.approx(SKLEARN[name](y, binned), abs=1e-12)  # exactly, on the binned scores
            assert abs(got - SKLEARN[name](y, x)) <= PIXEL_TOLERANCE / 2  # and close on the raw scores
    # many resamples at once: the same numbers row by row
    draws = np.stack([np.r_[rng.choice(10, 10), rng.choice(np.arange(10, 20), 10)] for _ in range(4)])
    counts = np.stack([np.bincount(d, minlength=20) for d in draws]).astype(float)
    for fn in PIXEL_TEST_METRICS.values():
        rows = fn(counts @ pos, counts @ neg)
        assert rows == pytest.approx([fn(c @ pos, c @ neg) for c in counts], abs=1e-12)


def test_clearly_better_maps_are_marked_with_one_seed(tmp_path):
    masks = _masks(12, 12)
    maps = {"a": [_maps(masks, 0.15, 1)], "b": [_maps(masks, 0.6, 2)], "c": [_maps(masks, 2.0, 3)]}
    tables = _study(tmp_path, maps, masks, aupro={"a": 0.9, "b": 0.6, "c": 0.3})
    for metric in PIXEL_TEST_METRICS:
        table = tables[metric]
        assert table.mean.at["bottle", "a"] > table.mean.at["bottle", "b"] > table.mean.at["bottle", "c"]
        assert table.ranks("bottle") == {"a": 1, "b": 2}
        assert table.decided["bottle"] == {TEST_IMAGES}  # one seed: the images alone decide
        # the paired statistic by hand on a few resamples: the drawn images' pooled pixels, scikit-learn
        reps = table.image_test.replicates("bottle", "a", "b")
        (draws, _), = table.image_test.predictions._draws.values()
        for d, rep in zip(draws[:5], reps[:5], strict=True):
            y = masks[d].ravel()
            by_hand = SKLEARN[metric](y, maps["a"][0][d].ravel()) - SKLEARN[metric](y, maps["b"][0][d].ravel())
            assert abs(rep - by_hand) <= PIXEL_TOLERANCE
    # AUPRO keeps the test over seeds: with one seed, no mark
    aupro = tables["aupro"]
    assert aupro.image_test is None and aupro.ranks("bottle") == {} and aupro.decided["bottle"] == set()
    # the same numbers without the maps: one seed cannot separate anything
    plain = _study(tmp_path / "plain", maps, masks, tested=False)["pixel_auroc"]
    assert plain.ranks("bottle") == {} and plain.decided["bottle"] == set()


def test_near_identical_maps_are_a_tie(tmp_path):
    masks = _masks(12, 12)
    base = _maps(masks, 0.8, 1)
    noisy = base + np.random.default_rng(5).normal(0, 0.1, base.shape)
    for metric, table in _study(tmp_path, {"a": [base], "b": [noisy]}, masks).items():
        assert table.display(table.mean.at["bottle", "a"]) != table.display(table.mean.at["bottle", "b"]), metric
        assert table.ranks("bottle") == {} and table.decided["bottle"] == {TEST_IMAGES}


def test_maps_that_do_not_reproduce_the_table_are_not_used(tmp_path):
    masks = _masks(12, 12)
    maps = {"a": [_maps(masks, 0.15, 1)], "b": [_maps(masks, 0.6, 2)]}
    assert _study(tmp_path, maps, masks)["pixel_ap"].ranks("bottle") == {"a": 1}
    write_maps(tmp_path, DETECTOR, "b", "bottle", 0, _maps(masks, 0.05, 2), masks)  # stale: b now near perfect
    frame = prepare(_rows(maps, masks))
    for table in build_tables(frame):
        attach_image_tests([table], RunPredictions(tmp_path, frame))
        assert table.image_test.replicates("bottle", "a", "b") is None
        assert table.ranks("bottle") == {} and table.decided["bottle"] == set()  # back to the seeds: a tie


def test_a_merged_leaderboard_tests_on_the_runs_maps(tmp_path):
    from acbench.report.leaderboard import merge_runs
    from acbench.report.load import load_run

    masks = _masks(12, 12)
    runs = {"one": {"a": [_maps(masks, 0.15, 1)]}, "two": {"b": [_maps(masks, 0.6, 2)]}}
    for name, maps in runs.items():
        _write(tmp_path / name, maps, masks)
        write_run(tmp_path / name, _rows(maps, masks), manifest(), with_samples=False)
    board = merge_runs([tmp_path / n for n in runs], tmp_path / "board")
    merged = load_run(board).frame
    assert len(list((board / "predictions").rglob("anomaly_maps.npz"))) == 2
    table = {t.metric: t for t in build_tables(merged)}["pixel_auroc"]
    attach_image_tests([table], RunPredictions(board, merged))
    assert table.ranks("bottle") == {"a": 1} and table.decided["bottle"] == {TEST_IMAGES}
