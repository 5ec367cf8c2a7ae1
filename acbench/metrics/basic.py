"""Weight-free quality statistics: pair counts, anomaly area, and mask alignment.

Mask alignment is acbench's own measure (no paper defines one): users of every generator report
defects missing from their mask or leaking outside it. For each pair whose source normal image is
known, with change = max over channels of |generated - source| / 255:

* `mask-precision`: the share of the total pixel change that lies inside the mask (1.0: nothing
  changed outside the defect);
* `mask-recall`: the share of mask pixels whose change exceeds CHANGE_THRESHOLD (1.0: the whole
  masked area visibly changed).
"""

from __future__ import annotations

import numpy as np

from acbench.data.io import load_rgb
from acbench.metrics.base import QualityMetric, with_category_mean
from acbench.results import MetricValue
from acbench.synthesis import SyntheticSet

CHANGE_THRESHOLD = 8 / 255  # a change of 8 grey levels is visible on a calibrated screen


class PairStats(QualityMetric):
    name = "pair-stats"
    description = "number of pairs and mean anomaly area fraction per type"

    def score(self, synthetic: SyntheticSet, data) -> list[MetricValue]:
        counts, areas = {}, {}
        for atype, records in sorted(synthetic.by_type().items()):
            counts[atype] = float(len(records))
            areas[atype] = float(np.mean([rec.load()[1].mean() for rec in records]))
        out = [MetricValue("n_pairs", v, anomaly_type=t) for t, v in counts.items()]
        out.append(MetricValue("n_pairs", float(sum(counts.values()))))
        return out + with_category_mean(areas, "mask_area")


def mask_alignment(generated: np.ndarray, source: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of one pair; see the module docstring."""
    change = np.abs(generated.astype(np.float32) - source.astype(np.float32)).max(axis=2) / 255.0
    total = float(change.sum())
    precision = float(change[mask].sum()) / total if total > 0 else 1.0
    recall = float((change[mask] > CHANGE_THRESHOLD).mean()) if mask.any() else 0.0
    return precision, recall


class MaskAlignment(QualityMetric):
    name = "mask-alignment"
    higher_is_better = True
    description = "share of the pixel change inside the mask, and share of the mask that changed"

    def score(self, synthetic: SyntheticSet, data) -> list[MetricValue]:
        precision, recall = {}, {}
        types = synthetic.anomaly_types  # a type without a pair of known source is counted as skipped
        for atype, records in sorted(synthetic.by_type().items()):
            pairs = []
            for rec in records:
                if not rec.source_normal:
                    continue
                image, mask = rec.load()
                source = load_rgb(data.root / rec.source_normal, image.shape[0])
                if source.shape != image.shape:
                    continue
                pairs.append(mask_alignment(image, source, mask))
            if pairs:
                precision[atype] = float(np.mean([p for p, _ in pairs]))
                recall[atype] = float(np.mean([r for _, r in pairs]))
        return (with_category_mean(precision, "mask_precision", types)
                + with_category_mean(recall, "mask_recall", types))
