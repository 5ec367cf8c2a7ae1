"""What every detector shares: options, the evaluation set, the training pool, raw outputs, rows."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from acbench.data.category import CategoryData
from acbench.data.io import atomic_write, load_mask, load_rgb
from acbench.errors import UserError
from acbench.results import MetricValue
from acbench.synthesis import SyntheticRecord, SyntheticSet

log = logging.getLogger(__name__)


class SyntheticOptions(BaseModel):
    """Options of every detector that trains on synthetic anomalies (sweepable in a study)."""

    model_config = ConfigDict(extra="forbid")

    synthetic_ratio: float = Field(0.5, ge=0.0, le=1.0,
                                   description="expected share of synthetic anomalies per training batch")
    n_synthetic: int | None = Field(None, ge=1, description="synthetic pairs used (default: all)")
    select_on_test: bool = Field(False, description="keep the best epoch on the TEST set (published "
                                 "protocol; optimistic, rows marked selection: test)")
    epochs: int | None = Field(None, ge=1, description="override the preset's number of epochs")
    image_size: int | None = Field(None, ge=32, description="override the preset's input size")
    samples_per_epoch: int | None = Field(None, ge=1, description="override the preset's training samples "
                                          "per epoch (not used by resnet-classifier)")
    data_on_device: bool = Field(True, description="unet-localization: keep the training set on the training "
                                 "device and gather each batch there (the same batches as the host path); "
                                 "false: build each batch on the host and copy it over (the former path)")


# --------------------------------------------------------------------------------------------- #
# Images as tensors


def image_tensor(paths: list[Path], size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size): compact enough to hold a whole category in memory."""
    return torch.from_numpy(np.stack([load_rgb(p, size) for p in paths])).permute(0, 3, 1, 2).contiguous()


def mask_tensor(paths: list[Path | None], size: int) -> torch.Tensor:
    """bool (N, size, size); None -> an empty mask."""
    empty = np.zeros((size, size), bool)
    return torch.from_numpy(np.stack([load_mask(p, size) if p is not None else empty for p in paths]))


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """torch computes with `threads` intra-op threads inside (None: the job's own count), restored after.
    A preset that pins its threads computes the same bits under any `executor.cpus_per_job`."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def to_float(images: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    return images.to(device, non_blocking=True).float().div_(255.0)


# --------------------------------------------------------------------------------------------- #
# The evaluation set


@dataclass
class EvalSet:
    """The held-out real evaluation split: all normal test images + the evaluation anomalies."""

    files: list[Path]
    labels: np.ndarray  # (N,) 0/1
    types: list[str]  # "good" for normals
    images: torch.Tensor  # uint8 (N, 3, S, S)
    masks: torch.Tensor  # bool (N, S, S)


def check_disjoint(eval_files: list[Path], data: CategoryData) -> None:
    """Evaluation must never see an image of the synthesis split (what methods trained on)."""
    synthesis = {p.resolve() for p in data.synthesis_files()}
    leaked = [p for p in eval_files if p.resolve() in synthesis]
    if leaked:
        raise UserError(f"{leaked[0]}: this image is in both the synthesis and the evaluation split "
                        f"({len(leaked)} in all); detectors evaluate only on disjoint splits: set "
                        "dataset.split.legacy_overlap: false")


def load_eval_set(data: CategoryData, size: int) -> EvalSet:
    anomalies = [e for atype in sorted(data.eval_anomalies) for e in data.eval_anomalies[atype]]
    files = list(data.eval_normal) + [e.image_path for e in anomalies]
    check_disjoint(files, data)
    labels = np.array([0] * len(data.eval_normal) + [1] * len(anomalies))
    types = ["good"] * len(data.eval_normal) + [e.anomaly_type for e in anomalies]
    masks = [None] * len(data.eval_normal) + [e.mask_path for e in anomalies]
    return EvalSet(files, labels, types, image_tensor(files, size), mask_tensor(masks, size))


# --------------------------------------------------------------------------------------------- #
# Synthetic pairs


def category_records(synthetic: SyntheticSet, data: CategoryData) -> list[SyntheticRecord]:
    """The pairs of this category (a user's set may hold several; an empty category column matches)."""
    records = [r for r in synthetic.records if r.category in ("", data.category)]
    if not records:
        raise UserError(f"{synthetic.index_path}: no pair of category '{data.category}'")
    return records


def select_pairs(records: list[SyntheticRecord], n: int | None, seed: int) -> list[SyntheticRecord]:
    """`n` pairs balanced over anomaly types (seeded round robin); all when n is None."""
    if n is None or n >= len(records):
        return list(records)
    rng = np.random.default_rng(seed)
    by_type: dict[str, list[SyntheticRecord]] = {}
    for rec in records:
        by_type.setdefault(rec.anomaly_type, []).append(rec)
    queues = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(by_type.items())]
    chosen: list[SyntheticRecord] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return chosen


@dataclass
class TrainingPool:
    """Normal training images (empty masks) and synthetic pairs, drawn per sample like the literature:
    with probability `ratio` a synthetic pair (type uniform, then pair uniform), else a normal image."""

    normals: torch.Tensor  # uint8 (N, 3, S, S)
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]  # type -> (uint8 images, bool masks)
    ratio: float

    @classmethod
    def build(cls, data: CategoryData, records: list[SyntheticRecord], size: int, ratio: float) -> TrainingPool:
        pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for atype in sorted({r.anomaly_type for r in records}):
            group = [r for r in records if r.anomaly_type == atype]
            pairs[atype] = (image_tensor([r.image for r in group], size), mask_tensor([r.mask for r in group], size))
        return cls(image_tensor(data.normal_train, size), pairs, ratio if pairs else 0.0)

    @property
    def n_synthetic(self) -> int:
        return sum(len(images) for images, _ in self.pairs.values())

    def batch(self, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, 3, S, S) and bool masks (B, S, S)."""
        types = sorted(self.pairs)
        images, masks = [], []
        for _ in range(size):
            if types and rng.random() < self.ratio:
                pair_images, pair_masks = self.pairs[types[rng.integers(len(types))]]
                j = rng.integers(len(pair_images))
                images.append(pair_images[j])
                masks.append(pair_masks[j])
            else:
                images.append(self.normals[rng.integers(len(self.normals))])
                masks.append(torch.zeros(self.normals.shape[-2:], dtype=torch.bool))
        return torch.stack(images), torch.stack(masks)


class DevicePool:
    """A `TrainingPool` resident on the training device: every image in one uint8 tensor (normals first, then
    the pairs type by type), every mask in one bool tensor. Each batch is one gather on the device.

    The draws are the host path's, in its order, from the same numpy generator (a few scalars per sample,
    on the CPU), so both paths give identical batches and identical training for a seed; only the pixels
    stay on the device instead of being stacked on the host and copied for every step.
    """

    def __init__(self, pool: TrainingPool, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.ratio = pool.ratio
        self.types = sorted(pool.pairs)
        size = pool.normals.shape[-2:]
        images = [pool.normals] + [pool.pairs[t][0] for t in self.types]
        masks = [torch.zeros((len(pool.normals), *size), dtype=torch.bool)] + [pool.pairs[t][1] for t in self.types]
        self.n_normals = len(pool.normals)
        self.offsets, self.counts, start = [], [], self.n_normals
        for t in self.types:
            self.offsets.append(start)
            self.counts.append(len(pool.pairs[t][0]))
            start += self.counts[-1]
        self.images = torch.cat(images).to(self.device)
        self.masks = torch.cat(masks).to(self.device)

    def indices(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """Rows of the batch, drawn exactly as `TrainingPool.batch` draws them."""
        rows = np.empty(size, dtype=np.int64)
        for i in range(size):
            if self.types and rng.random() < self.ratio:
                t = rng.integers(len(self.types))
                rows[i] = self.offsets[t] + rng.integers(self.counts[t])
            else:
                rows[i] = rng.integers(self.n_normals)
        return rows

    def batch(self, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, 3, S, S) and bool masks (B, S, S), on the device."""
        rows = torch.from_numpy(self.indices(size, rng)).to(self.device, non_blocking=True)
        return self.images.index_select(0, rows), self.masks.index_select(0, rows)


# --------------------------------------------------------------------------------------------- #
# Raw outputs and rows


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def write_raw_outputs(workdir: Path, evalset: EvalSet, scores: np.ndarray, maps: np.ndarray | None,
                      root: Path) -> None:
    """predictions.csv (file relative to the dataset root, label, anomaly type, image score) and
    anomaly_maps.npz (maps, ground-truth masks, files), so any metric, ROC curve or bootstrap
    interval can be recomputed without re-training."""
    workdir.mkdir(parents=True, exist_ok=True)

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "label", "anomaly_type", "score"])
            for path, label, atype, score in zip(evalset.files, evalset.labels, evalset.types, scores, strict=True):
                writer.writerow([_relative(path, root), int(label), atype, repr(float(score))])

    atomic_write(workdir / "predictions.csv", write_csv)
    if maps is not None:
        arrays = {"maps": maps.astype(np.float32), "masks": evalset.masks.numpy(),
                  "files": np.array([_relative(p, root) for p in evalset.files])}

        def write_npz(tmp: Path) -> None:
            with tmp.open("wb") as fh:  # a file object: savez would append ".npz" to a path
                np.savez_compressed(fh, **arrays)

        atomic_write(workdir / "anomaly_maps.npz", write_npz)


OMITTED = "ground-truth masks all empty or all full: pixel metric undefined"


def metric_rows(values: dict[str, float], extra: dict[str, Any]) -> list[MetricValue]:
    """One row per metric; an undefined (NaN) pixel metric keeps its row, marked `omitted`."""
    scope = {"image_auroc": "image", "image_ap": "image", "image_f1max": "image", "accuracy": "classification"}
    return [MetricValue(name, value, scope.get(name, "pixel"), "",
                        {**extra, **({"omitted": OMITTED} if np.isnan(value) else {})})
            for name, value in values.items()]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)
