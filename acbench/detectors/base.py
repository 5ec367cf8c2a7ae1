"""The detector interface (plugins in the `acbench.detectors` entry-point group).

A detector trains on a category's normal training images plus (if `uses_synthetic`) one method's
SyntheticSet, evaluates on the held-out real evaluation split, writes its raw outputs into
`workdir` (predictions.csv, anomaly maps) and returns metric values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from acbench.data.category import CategoryData
from acbench.results import MetricValue
from acbench.synthesis import NoOptions, SyntheticSet, WeightRequirement


class Detector(ABC):
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: False for the "no synthesis" reference (e.g. PatchCore on normal images only): run once per
    #: category and seed, reported as method "none".
    uses_synthetic: ClassVar[bool] = True
    presets: ClassVar[tuple[str, ...]] = ("tiny", "paper")
    description: ClassVar[str] = ""

    def __init__(self, options: BaseModel | dict | None = None, preset: str = "tiny",
                 weights: str = "pretrained", device: str = "cpu") -> None:
        self.options = options if isinstance(options, BaseModel) else self.Options.model_validate(options or {})
        self.preset = preset
        self.weights_policy = weights
        self.device = device

    def required_weights(self) -> list[WeightRequirement]:
        return []

    @abstractmethod
    def run(self, data: CategoryData, synthetic: SyntheticSet | None, workdir: Path, seed: int,
            progress: Callable[[int, int], None] | None = None) -> list[MetricValue]:
        """Train, evaluate on `data.eval_files()`, write raw outputs into `workdir`, return metrics."""
