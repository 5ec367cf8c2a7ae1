"""Reference anomalies with captions, and target masks (through `acbench.masks` when available)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from acbench.data.category import CategoryData, DefectExample
from acbench.errors import UserError
from acbench.masks import MaskSourceSpec
from acbench_methods.anomalycontrol.cache import Reference


def load_captions(path: Path | None) -> dict[str, str]:
    """Per-image captions: a JSON object {image path relative to the dataset root: caption}."""
    if path is None:
        return {}
    try:
        captions = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: captions file not found (option captions)") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected "
            '{"<category>/test/<defect>/<file>": "caption", ...}'
        ) from None
    if not isinstance(captions, dict) or not all(isinstance(v, str) for v in captions.values()):
        raise UserError(f"{path}: expected a JSON object mapping image paths to caption strings")
    return {k.replace("\\", "/"): v for k, v in captions.items()}


def caption_of(example: DefectExample, data: CategoryData, captions: dict[str, str], template: str) -> str:
    relative = (
        example.image_path.relative_to(data.root).as_posix()
        if example.image_path.is_relative_to(data.root)
        else example.image_path.as_posix()
    )
    if relative in captions:
        return captions[relative]
    return template.format(category=data.category.replace("_", " "), defect=data.text(example.anomaly_type))


def reference_entry(
    example: DefectExample, data: CategoryData, captions: dict[str, str], template: str
) -> dict[str, str]:
    """A reference as plain data (paths and caption), e.g. for the fit artifact's reference table."""
    return {
        "category": data.category,
        "anomaly_type": example.anomaly_type,
        "image": str(example.image_path),
        "mask": str(example.mask_path),
        "caption": caption_of(example, data, captions, template),
    }


def reference_of(
    example: DefectExample, data: CategoryData, captions: dict[str, str], template: str, size: int
) -> Reference:
    return Reference(example.image(size), example.mask(size), caption_of(example, data, captions, template))


class TargetMasks:
    """Target masks from the protocol's mask source (`acbench.masks`, default `real-augmented`)."""

    def __init__(self, spec: MaskSourceSpec) -> None:
        self.source = spec.build()

    def sample(
        self, data: CategoryData, anomaly_type: str, normal: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return np.asarray(self.source.sample(data, anomaly_type, normal, rng), dtype=bool)
