"""The synthesis-method interface and the on-disk SyntheticSet format.

A method is a `Synthesizer` plugin registered in the `acbench.methods` entry-point group. The
harness calls `fit` (once per category, or once per dataset, see `fit_scope`) and then `generate`
per category; everything a method learns lives in the `workdir` it is given, so the generate job
can run in another process or on another machine.

SyntheticSet (the interchange format, also for users' own methods)::

    <dir>/images/<name>.png     RGB
    <dir>/masks/<name>.png      0/255, same size as the image
    <dir>/index.csv             image, mask, category, anomaly_type, method, seed, source_normal, mask_kind

`mask_kind` says what the mask outlines: `pixel` (the defect's own pixels) or `box` (a region that
holds the defect, e.g. AnoGen's rotated boxes: pixel metrics against such labels are not comparable).
Index files written before the column existed read as `pixel`.
"""

from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from acbench.data.category import CategoryData
from acbench.data.io import atomic_write, load_mask, load_rgb, save_png
from acbench.errors import UserError

INDEX_COLUMNS = ["image", "mask", "category", "anomaly_type", "method", "seed", "source_normal", "mask_kind"]
REQUIRED_COLUMNS = INDEX_COLUMNS[:-1]  # `mask_kind` came later: older index files lack it
MaskKind = Literal["pixel", "box"]
MASK_KINDS: tuple[str, ...] = ("pixel", "box")


@dataclass
class Sample:
    """One synthetic anomaly: an RGB uint8 image, a bool mask of the same size, its type."""

    image: np.ndarray
    mask: np.ndarray
    anomaly_type: str
    source_normal: str = ""  # the normal image it was painted on, when known
    mask_kind: MaskKind = "pixel"  # "box": the mask is a region holding the defect, not its outline

    def __post_init__(self) -> None:
        if self.mask_kind not in MASK_KINDS:
            raise ValueError(f"Sample.mask_kind must be one of {MASK_KINDS}, got {self.mask_kind!r}")
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"Sample.image must be uint8 HxWx3, got {self.image.dtype} {self.image.shape}")
        if self.mask.shape != self.image.shape[:2]:
            raise ValueError(f"Sample.mask {self.mask.shape} must match the image {self.image.shape[:2]}")
        self.mask = self.mask.astype(bool)


@dataclass
class GenerationRequest:
    """What the harness asks of `generate`: `count` pairs of one anomaly type, reproducibly."""

    anomaly_type: str
    count: int
    seed: int
    fit_dir: Path | None = None  # where `fit` left the method's state
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, _stable_int(self.anomaly_type)])


def _stable_int(text: str) -> int:
    return int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little")


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class WeightRequirement:
    """A pretrained network a method, metric or detector needs (for `weights check` and planning)."""

    name: str
    description: str = ""
    # Where it is found, for `acbench weights check` and the planner (any that apply):
    repo_id: str | None = None  # a Hugging Face hub id, looked up in the hub cache
    filename: str | None = None  # a torch-hub checkpoint file name, looked up in $TORCH_HOME/hub/checkpoints
    url: str | None = None  # where that file is downloaded from when online
    path: str | None = None  # an explicit local file or folder (from the plugin's options)


class Synthesizer(ABC):
    """A synthesis method. Subclasses set `Options` (a pydantic model of their protocol options)."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    #: "none": training-free; "category": fit once per category; "dataset": once for all categories.
    fit_scope: ClassVar[Literal["none", "category", "dataset"]] = "none"
    description: ClassVar[str] = ""

    def __init__(self, options: BaseModel | dict | None = None, weights: str = "pretrained") -> None:
        self.options = options if isinstance(options, BaseModel) else self.Options.model_validate(options or {})
        self.weights_policy = weights

    @classmethod
    def default_variant(cls, options: dict[str, Any]) -> str | None:
        """The protocol `variant` (the `name/variant` label of every table) when the protocol gives none.

        A plugin whose options select what is really a different method (e.g. which method's released
        outputs are read) names it here; `options` are the validated options as a dict.
        """
        return None

    def required_weights(self) -> list[WeightRequirement]:
        return []

    def check(self) -> None:
        """Mistakes knowable before any job runs (e.g. a folder named in the options that is missing).

        Called by the pre-flight for every method of a protocol; raise `UserError` with one line naming
        the option, the path and the fix (`acbench.errors.require_folder` covers the common case).
        """
        return None

    def fit(self, categories: list[CategoryData], workdir: Path, seed: int, device: str = "cpu") -> None:
        """Learn from the synthesis split; write everything needed later into `workdir`.

        Training-free methods (fit_scope "none") keep this default, which learns nothing.
        """
        return None

    @abstractmethod
    def generate(self, data: CategoryData, request: GenerationRequest) -> Iterator[Sample]:
        """Yield `request.count` samples of `request.anomaly_type` for this category."""

    def provenance(self) -> dict[str, Any]:
        """Facts recorded in the manifest and reports (e.g. which weights were random)."""
        return {}


# --------------------------------------------------------------------------------------------- #
# SyntheticSet


@dataclass
class SyntheticRecord:
    image: Path
    mask: Path
    category: str
    anomaly_type: str
    method: str
    seed: int
    source_normal: str
    mask_kind: str = "pixel"

    def load(self, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return load_rgb(self.image, size), load_mask(self.mask, size)


class SyntheticSet:
    """A folder of synthetic image+mask pairs with its index."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records = self._read_index()

    @property
    def index_path(self) -> Path:
        return self.root / "index.csv"

    def _read_index(self) -> list[SyntheticRecord]:
        if not self.index_path.is_file():
            raise UserError(f"{self.index_path}: not a SyntheticSet (index.csv missing)")
        with self.index_path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = set(REQUIRED_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{self.index_path}: missing columns {sorted(missing)}")
            records = []
            for line, row in enumerate(reader, start=2):
                image, mask = self.root / row["image"], self.root / row["mask"]
                for p in (image, mask):
                    if not p.is_file():
                        raise UserError(f"{self.index_path}:{line}: file {p} does not exist")
                kind = row.get("mask_kind") or "pixel"
                if kind not in MASK_KINDS:
                    raise UserError(f"{self.index_path}:{line}: mask_kind '{kind}' is unknown; use one of "
                                    f"{', '.join(MASK_KINDS)}")
                records.append(SyntheticRecord(image, mask, row["category"], row["anomaly_type"],
                                               row["method"], int(row["seed"] or 0), row["source_normal"], kind))
        if not records:
            raise UserError(f"{self.index_path}: empty synthetic set (no pairs)")
        return records

    def __len__(self) -> int:
        return len(self.records)

    def by_type(self) -> dict[str, list[SyntheticRecord]]:
        out: dict[str, list[SyntheticRecord]] = {}
        for rec in self.records:
            out.setdefault(rec.anomaly_type, []).append(rec)
        return out

    @property
    def anomaly_types(self) -> list[str]:
        return sorted(self.by_type())

    @property
    def mask_kinds(self) -> set[str]:
        return {rec.mask_kind for rec in self.records}


def write_synthetic_set(root: Path, samples: Iterable[Sample], category: str, method: str, seed: int,
                        progress=None) -> int:
    """Write samples as a SyntheticSet (the index is written last, atomically). Returns the count."""
    rows = []
    counters: dict[str, int] = {}
    for sample in samples:
        i = counters.get(sample.anomaly_type, 0)
        counters[sample.anomaly_type] = i + 1
        name = f"{_safe(sample.anomaly_type)}_{i:04d}.png"
        save_png(root / "images" / name, sample.image)
        save_png(root / "masks" / name, sample.mask)
        rows.append({"image": f"images/{name}", "mask": f"masks/{name}", "category": category,
                     "anomaly_type": sample.anomaly_type, "method": method, "seed": seed,
                     "source_normal": sample.source_normal, "mask_kind": sample.mask_kind})
        if progress is not None:
            progress()

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(root / "index.csv", write)
    return len(rows)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
