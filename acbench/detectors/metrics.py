"""Detection metrics computed once over a whole evaluation set (anomalib.metrics on raw outputs).

Why not anomalib's `Evaluator` inside `engine.test()`: torchmetrics sigmoids every *batch* that holds
a value outside [0, 1], so unbounded scores (PatchCore distances) end up on different scales per
batch (anomalib #3407: "PatchCore always reports AUROC 0.5"). Here the scores of the whole set are
min-max scaled once — a monotone affine map, so every rank-based metric is unchanged — and each
metric gets a single update.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1max")
PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1max", "aupro")


def _unit(values: torch.Tensor) -> torch.Tensor:
    """Global min-max scaling to [0, 1] (constant input -> zeros)."""
    values = values.double()
    low, high = values.min(), values.max()
    if high <= low:
        return torch.zeros_like(values, dtype=torch.float32)
    return ((values - low) / (high - low)).float()


def _metric_objects(fpr_limit: float) -> dict[str, object]:
    from anomalib.metrics import AUPR, AUPRO, AUROC, F1Max

    image, pixel = ["pred_score", "gt_label"], ["anomaly_map", "gt_mask"]
    return {
        "image_auroc": AUROC(fields=image), "image_ap": AUPR(fields=image), "image_f1max": F1Max(fields=image),
        "pixel_auroc": AUROC(fields=pixel), "pixel_ap": AUPR(fields=pixel), "pixel_f1max": F1Max(fields=pixel),
        "aupro": AUPRO(fields=pixel, fpr_limit=fpr_limit),
    }


def detection_metrics(labels: np.ndarray, scores: np.ndarray, masks: np.ndarray | None = None,
                      maps: np.ndarray | None = None, fpr_limit: float = 0.3) -> dict[str, float]:
    """Image metrics from (labels, scores); pixel metrics too when (masks, maps) are given.

    labels: (N,) 0 normal / 1 anomalous; scores: (N,) higher = more anomalous;
    masks: (N, H, W) bool ground truth; maps: (N, H, W) anomaly maps at the mask resolution.
    AUPRO is normalised to [0, 1] over FPR [0, fpr_limit] (MVTec convention, limit 0.3).
    Ground-truth masks that are all empty (or all full) leave the pixel metrics undefined: they are
    NaN (rows marked `omitted`), never silently missing.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    if len(np.unique(labels)) != 2:
        raise ValueError("detection metrics need both normal and anomalous evaluation images")
    batch = SimpleNamespace(gt_label=torch.from_numpy(labels), pred_score=_unit(torch.as_tensor(scores).ravel()))
    wanted = list(IMAGE_METRICS)
    if masks is not None and maps is not None:
        masks_t, maps_t = torch.as_tensor(np.asarray(masks, dtype=bool)), torch.as_tensor(maps).float()
        if masks_t.shape != maps_t.shape:
            raise ValueError(f"anomaly maps {tuple(maps_t.shape)} and masks {tuple(masks_t.shape)} differ in shape")
        if masks_t.any() and not masks_t.all():
            batch.gt_mask, batch.anomaly_map = masks_t, _unit(maps_t)
            wanted += list(PIXEL_METRICS)
    objects = _metric_objects(fpr_limit)
    out = {}
    for name in wanted:
        metric = objects[name]
        metric.update(batch)
        out[name] = float(metric.compute())
    if masks is not None and maps is not None:
        out = {**out, **{name: float("nan") for name in PIXEL_METRICS if name not in out}}
    return out


def classification_accuracy(true: list[str], predicted: list[str]) -> float:
    """Top-1 accuracy over the whole test set (not the last batch, as the original code reported)."""
    if len(true) != len(predicted) or not true:
        raise ValueError("accuracy needs as many predictions as labels, and at least one")
    return float(np.mean([t == p for t, p in zip(true, predicted, strict=True)]))
