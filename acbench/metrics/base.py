"""The generation-quality metric interface (plugins in the `acbench.metrics` entry-point group)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

from acbench.data.category import CategoryData
from acbench.results import MetricValue
from acbench.synthesis import SyntheticSet, WeightRequirement


class QualityMetric(ABC):
    """Scores one SyntheticSet of one category against that category's real data."""

    name: ClassVar[str]
    #: True: higher is better; False: lower is better; None: neither (a descriptive statistic).
    higher_is_better: ClassVar[bool | None] = None
    description: ClassVar[str] = ""

    def __init__(self, weights: str = "pretrained", device: str = "cpu") -> None:
        self.weights_policy = weights
        self.device = device

    def required_weights(self) -> list[WeightRequirement]:
        return []

    @abstractmethod
    def score(self, synthetic: SyntheticSet, data: CategoryData) -> list[MetricValue]:
        """Values per anomaly type (anomaly_type set) and for the category (anomaly_type "")."""


def coverage(per_type: dict[str, float], types: list[str] | None) -> dict[str, int]:
    """How many types a category mean covers (`n_types`) and how many of `types` it leaves out
    (`n_types_skipped`: no usable reference, too few images, a NaN value), so a mean over fewer types
    is never taken for a mean over all of them."""
    covered = sum(1 for v in per_type.values() if math.isfinite(v))
    wanted = len(set(types) | set(per_type)) if types is not None else len(per_type)
    return {"n_types": covered, "n_types_skipped": wanted - covered}


def with_category_mean(per_type: dict[str, float], metric: str, types: list[str] | None = None,
                       **extra) -> list[MetricValue]:
    """Per-type values plus their mean as the category value (the literature's aggregation); `types`:
    every type there was to score (the category row counts those left out)."""
    values = [MetricValue(metric, float(v), anomaly_type=t, extra=dict(extra)) for t, v in per_type.items()]
    if per_type:
        mean = sum(per_type.values()) / len(per_type)
        values.append(MetricValue(metric, float(mean), extra={**extra, **coverage(per_type, types)}))
    return values
