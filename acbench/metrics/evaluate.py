"""Scoring a folder of generated images outside a study (`acbench evaluate quality`).

The generated folder is a SyntheticSet or a plain image folder (flat, or one sub-folder per
anomaly type); the reference folder holds the real anomalies, flat or per type (an MVTec
`<category>/test` folder works: `good` is skipped). Every reference image of a type is used:
IC-LPIPS clusters around all of them, so give the recipe's references (the literature's first
third of each type) when comparing with published numbers. The same metric code runs as a study's
quality stage.
"""

from __future__ import annotations

from pathlib import Path

from acbench import registry
from acbench.errors import UserError
from acbench.metrics.images import folder_sets
from acbench.results import MetricValue
from acbench.weights import POLICIES

DEFAULT_METRICS = ("is", "ic-lpips", "fid", "kid")


def evaluate_quality(generated: str | Path, reference: str | Path, metrics: list[str] | tuple[str, ...] =
                     DEFAULT_METRICS, device: str = "cpu", weights: str = "pretrained") -> list[MetricValue]:
    """Every metric's rows (per type and overall) for the generated folder against the reference folder."""
    if weights not in POLICIES:
        raise UserError(f"--weights '{weights}' is unknown; use one of {', '.join(POLICIES)}")
    plugins = [registry.load("metrics", name) for name in metrics]
    for name, cls in zip(metrics, plugins, strict=True):
        if not hasattr(cls, "score_sets"):
            raise UserError(f"metric '{name}' needs a study's category data and cannot score folders; "
                            f"use it in a protocol, or pick from {', '.join(folder_metrics())}")
    generated_sets, reference_sets = folder_sets(generated), folder_sets(reference)
    rows: list[MetricValue] = []
    for cls in plugins:
        rows += cls(weights=weights, device=device).score_sets(generated_sets, reference_sets)
    return rows


def folder_metrics() -> list[str]:
    """Registered metrics that can score plain folders."""
    return [n for n in registry.names("metrics") if hasattr(registry.load("metrics", n), "score_sets")]
