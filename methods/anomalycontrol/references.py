"""Reference anomalies with captions, and target masks (through `acbench.masks` when available)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from acbench.data.category import CategoryData, DefectExample
from acbench.errors import UserError
from acbench_methods.anomalycontrol.cache import Reference
from acbench_methods.anomalycontrol.model import resize_mask
from acbench_methods.anomalycontrol.options import MaskSourceOption


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
    """Target masks from the protocol's mask source.

    Uses `acbench.masks.get_mask_source` when that package is installed. Without it only the
    default `real-augmented` works, through a small stand-in: a real training mask of the type,
    randomly flipped, rotated by a quarter turn and shifted (wrapping), at the normal image's size.
    """

    def __init__(self, option: MaskSourceOption) -> None:
        self.option = option
        try:
            from acbench.masks import get_mask_source
        except ImportError:
            if option.name != "real-augmented":
                raise UserError(
                    f"mask_source.name: '{option.name}' needs the acbench.masks package; use 'real-augmented'"
                ) from None
            self.source = None
        else:
            self.source = get_mask_source(option.name, option.options)

    def sample(
        self, data: CategoryData, anomaly_type: str, normal: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        if self.source is not None:
            return np.asarray(self.source.sample(data, anomaly_type, normal, rng), dtype=bool)
        return augmented_real_mask(data, anomaly_type, normal.shape[:2], rng)


def augmented_real_mask(
    data: CategoryData, anomaly_type: str, shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    examples = data.synthesis.get(anomaly_type) or []
    if not examples:
        raise UserError(f"anomalycontrol: no training mask of type '{anomaly_type}' in {data.category}")
    for _ in range(10):
        mask = examples[int(rng.integers(len(examples)))].mask()
        mask = resize_mask(mask, shape)
        mask = np.rot90(mask, k=int(rng.integers(4))) if shape[0] == shape[1] else mask
        if rng.random() < 0.5:
            mask = mask[:, ::-1]
        shift = (
            int(rng.integers(-shape[0] // 4, shape[0] // 4 + 1)),
            int(rng.integers(-shape[1] // 4, shape[1] // 4 + 1)),
        )
        mask = np.roll(mask, shift, axis=(0, 1))
        if mask.any():
            return np.ascontiguousarray(mask)
    raise UserError(f"anomalycontrol: the training masks of '{anomaly_type}' in {data.category} are empty")
