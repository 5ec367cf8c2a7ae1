"""Generation-quality metrics (registered in the `acbench.metrics` entry-point group)."""

from acbench.metrics.base import QualityMetric, with_category_mean

__all__ = ["QualityMetric", "with_category_mean"]
