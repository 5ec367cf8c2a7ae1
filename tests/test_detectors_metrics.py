"""Detection metrics against independent references (scikit-learn; an MVTec-style AUPRO) on fixed arrays."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from acbench.detectors.metrics import classification_accuracy, detection_metrics


def _f1max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def reference_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, n_thresholds: int = 4000
                    ) -> float:
    """The MVTec definition, written independently: 8-connected GT regions of the whole set, per-region
    overlap averaged over regions, integrated over FPR in [0, limit] and divided by the limit."""
    regions = []
    for mask, amap in zip(masks, maps, strict=True):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[labelled == k] for k in range(1, count + 1)]
    normal = maps[~masks]
    thresholds = np.linspace(maps.max() + 1e-9, maps.min() - 1e-9, n_thresholds)
    fpr = np.array([(normal > t).mean() for t in thresholds])
    pro = np.array([np.mean([(r > t).mean() for r in regions]) for t in thresholds])
    keep = fpr <= fpr_limit
    x, y = np.append(fpr[keep], fpr_limit), np.append(pro[keep], np.interp(fpr_limit, fpr, pro))
    return float(np.trapezoid(y, x) / fpr_limit)


@pytest.fixture(scope="module")
def fixed_arrays():
    rng = np.random.default_rng(7)
    n_normal, n_anomalous, size = 12, 14, 24
    labels = np.r_[np.zeros(n_normal, int), np.ones(n_anomalous, int)]
    scores = rng.normal(size=labels.size) + 1.2 * labels
    scores[0] = scores[-1]  # a tie across classes
    masks = np.zeros((labels.size, size, size), bool)
    for i in range(n_normal, labels.size):
        for _ in range(rng.integers(1, 3)):  # one or two regions of different sizes
            y, x = rng.integers(0, size - 6, size=2)
            h, w = rng.integers(1, 6, size=2)
            masks[i, y : y + h, x : x + w] = True
    maps = rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape)
    return labels, scores, masks, maps


def test_image_and_pixel_metrics_match_sklearn(fixed_arrays):
    labels, scores, masks, maps = fixed_arrays
    got = detection_metrics(labels, scores, masks, maps)
    assert got["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert got["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert got["image_f1max"] == pytest.approx(_f1max(labels, scores), abs=1e-6)
    flat_masks, flat_maps = masks.ravel(), maps.ravel()
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-6)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(flat_masks, flat_maps), abs=1e-6)
    assert got["pixel_f1max"] == pytest.approx(_f1max(flat_masks, flat_maps), abs=1e-5)


def test_aupro_matches_independent_reference(fixed_arrays):
    _, _, masks, maps = fixed_arrays
    got = detection_metrics(np.r_[0, 1], np.r_[0.0, 1.0])  # image-only call works without maps
    assert set(got) == {"image_auroc", "image_ap", "image_f1max"}
    labels = masks.reshape(len(masks), -1).any(axis=1).astype(int)
    got = detection_metrics(labels, np.arange(len(labels)), masks, maps)
    assert got["aupro"] == pytest.approx(reference_aupro(masks, maps), abs=2e-3)
    assert 0.0 < got["aupro"] < 1.0


def test_unbounded_scores_are_scored_once_not_per_batch(fixed_arrays):
    """PatchCore-like distances far outside [0, 1] must give the same ranks-based values."""
    labels, scores, masks, maps = fixed_arrays
    plain = detection_metrics(labels, scores, masks, maps)
    shifted = detection_metrics(labels, 40.0 + 25.0 * scores, masks, 3.0 + 50.0 * maps)
    for name, value in plain.items():
        assert shifted[name] == pytest.approx(value, abs=1e-5), name


def test_perfect_and_inverted_scores():
    labels = np.r_[0, 0, 0, 1, 1]
    assert detection_metrics(labels, labels * 2.0)["image_auroc"] == pytest.approx(1.0)
    assert detection_metrics(labels, -labels * 2.0)["image_auroc"] == pytest.approx(0.0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="both normal and anomalous"):
        detection_metrics(np.zeros(4), np.arange(4.0))
    with pytest.raises(ValueError, match="differ in shape"):
        detection_metrics(np.r_[0, 1], np.r_[0.0, 1.0], np.zeros((2, 4, 4), bool), np.zeros((2, 5, 5)))


def test_accuracy_over_the_whole_set():
    assert classification_accuracy(["a", "b", "b", "c"], ["a", "b", "c", "c"]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        classification_accuracy(["a"], [])
