"""Result rows: the long-format records every stage produces and `results.csv` collects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CORE_COLUMNS = ["method", "variant", "category", "seed", "stage", "detector", "anomaly_type",
                "metric", "scope", "value"]


@dataclass
class MetricValue:
    """One number from a metric or detector; the engine adds method/category/seed/stage.

    `anomaly_type` is "" for a category-level value. `extra` holds columns such as the metric
    variant, the weights used ("random" marks non-comparable numbers), or n_generated.
    """

    metric: str
    value: float
    scope: str = "quality"
    anomaly_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, **context: Any) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {**context, **data, **extra}
