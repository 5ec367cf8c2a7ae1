"""What a synthesis method and a detector see of one dataset category."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acbench.data.io import load_mask, load_rgb


@dataclass(frozen=True)
class DefectExample:
    """One real anomalous image with its ground-truth mask."""

    image_path: Path
    mask_path: Path
    anomaly_type: str

    def image(self, size: int | None = None) -> np.ndarray:
        return load_rgb(self.image_path, size)

    def mask(self, size: int | None = None) -> np.ndarray:
        return load_mask(self.mask_path, size)


@dataclass
class CategoryData:
    """One category, already split.

    `synthesis` (per anomaly type) is what methods may train on and what IC-LPIPS uses as
    references; `eval_normal` + `eval_anomalies` is the held-out real test set for detectors.
    """

    dataset: str
    category: str
    root: Path
    normal_train: list[Path]
    synthesis: dict[str, list[DefectExample]]
    eval_normal: list[Path]
    eval_anomalies: dict[str, list[DefectExample]]
    type_texts: dict[str, str] = field(default_factory=dict)
    image_size: int | None = None

    @property
    def anomaly_types(self) -> list[str]:
        return sorted(set(self.synthesis) | set(self.eval_anomalies))

    def text(self, anomaly_type: str) -> str:
        """The words for a defect type ('color' -> 'color', 'broken_large' -> 'broken large')."""
        return self.type_texts.get(anomaly_type, anomaly_type.replace("_", " "))

    def normal_image(self, index: int) -> np.ndarray:
        return load_rgb(self.normal_train[index], self.image_size)

    def eval_files(self) -> list[Path]:
        """Every image a detector is evaluated on."""
        return list(self.eval_normal) + [e.image_path for ex in self.eval_anomalies.values() for e in ex]

    def synthesis_files(self) -> list[Path]:
        return [e.image_path for ex in self.synthesis.values() for e in ex]
