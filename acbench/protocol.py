"""A study protocol: the YAML file that defines one study, as validated pydantic models.

Every user mistake becomes a `UserError` naming the YAML path of the bad field
(`methods[1].options.per_type: …`) and what is expected; unknown keys are errors, never ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from acbench import registry
from acbench.errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(Strict):
    """How real anomalies are divided between synthesis (training, references) and evaluation."""

    fraction: float = Field(0.333, gt=0.0, lt=1.0, description="share of each defect type for synthesis")
    order: Literal["sorted", "random"] = "sorted"
    seed: int = 0
    legacy_overlap: bool = Field(
        False,
        description="reproduce the AnomalyDiffusion code: image index floor(n/3) is on both sides",
    )


DatasetKind = Literal["auto", "mvtec", "visa", "mpdd", "btad", "mtd", "mvtec3d", "realiad", "mvtec_ad2", "folder",
                      "demo"]
# Layout options and the kinds they apply to (`auto` accepts them all: the recognised layout decides).
LAYOUT_OPTIONS = {"types": ("visa",), "views": ("realiad",), "resolution": ("realiad",),
                  "split_file": ("visa", "realiad")}


class DatasetConfig(Strict):
    """Which dataset, read in its released layout (`acbench.data`), and how its anomalies are split."""

    kind: DatasetKind = Field("auto", description="layout reader; auto recognises it from the root folder")
    root: Path | None = None
    categories: Literal["all"] | list[str] = "all"
    split: SplitConfig = SplitConfig()
    image_size: int | None = Field(None, ge=16, description="resize every image to this square size")
    type_texts: dict[str, str] = Field(default_factory=dict, description="defect folder name -> text")
    demo_seed: int = 0
    types: Literal["annotated", "single"] | None = Field(
        None, description="VisA: one type per annotated defect name (annotated, default) or one type (single)")
    views: list[Literal["C1", "C2", "C3", "C4", "C5"]] | None = Field(
        None, min_length=1, description="Real-IAD: camera views to read (default all five)")
    resolution: Literal["256", "512", "1024", "raw"] | None = Field(
        None, description="Real-IAD: image folder realiad_<resolution> (default the smallest present)")
    split_file: str | None = Field(
        None, description="split file under root (VisA: split_csv/1cls.csv, Real-IAD: "
                          "realiad_jsons/realiad_jsons/{category}.json)")

    @field_validator("root", mode="before")
    @classmethod
    def _expand_env(cls, value: Any) -> Any:
        return None if value is None else expand_env(str(value))

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_serializer(mode="wrap")
    def _without_unset_layout_options(self, handler: Any) -> dict[str, Any]:
        """Unset layout options are left out, so the job hashes of studies written before they existed
        (and of every dataset they do not apply to) stay the same: those runs resume, not restart."""
        data = handler(self)
        for option in LAYOUT_OPTIONS:
            if data.get(option) is None:
                data.pop(option, None)
        return data

    @model_validator(mode="after")
    def _root_needed(self) -> DatasetConfig:
        if self.kind != "demo" and self.root is None:
            raise ValueError(f"dataset kind '{self.kind}' needs a 'root' folder")
        for option, kinds in LAYOUT_OPTIONS.items():
            if getattr(self, option) is not None and self.kind not in (*kinds, "auto"):
                raise ValueError(f"'{option}' applies to kind {' or '.join(kinds)}, not '{self.kind}': remove it")
        return self


class MethodConfig(Strict):
    name: str
    variant: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        """The method's column name in every table: name, or name/variant."""
        return f"{self.name}/{self.variant}" if self.variant else self.name


class DetectorConfig(Strict):
    name: str
    variant: str | None = None
    preset: str = "tiny"
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}/{self.variant}" if self.variant else self.name


class GenerationConfig(Strict):
    per_type: int = Field(16, ge=1, description="synthetic image+mask pairs per anomaly type")


class ReportConfig(Strict):
    formats: list[Literal["md", "csv", "tex", "html"]] = Field(default_factory=lambda: ["md", "csv"])
    sample_grid: bool = True
    samples_per_type: int = Field(3, ge=1)
    bootstrap: int = Field(0, ge=0, description="resamples for 95% intervals of image metrics (0: none)")
    trackers: list[Literal["mlflow", "tensorboard", "wandb"]] = Field(
        default_factory=list, description="experiment trackers to log the finished run to (optional extras)")


class ExecutorConfig(Strict):
    kind: Literal["local", "ray", "slurm"] = "local"
    device: str = "auto"
    address: str | None = None
    gpus_per_job: float = 0
    cpus_per_job: float = 1
    workers: int = Field(1, ge=1, description="kind local: jobs run side by side in this many worker processes")
    partition: str | None = Field(None, description="SLURM partition (kind: slurm)")
    time: str | None = Field(None, description="SLURM time limit per job, e.g. '04:00:00' (kind: slurm)")
    options: dict[str, Any] = Field(default_factory=dict)


class Protocol(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    dataset: DatasetConfig
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    methods: list[MethodConfig] = Field(min_length=1)
    generation: GenerationConfig = GenerationConfig()
    metrics: list[str] = Field(default_factory=list)
    detectors: list[DetectorConfig] = Field(default_factory=list)
    weights: Literal["pretrained", "pretrained-or-random", "random"] = "pretrained"
    report: ReportConfig = ReportConfig()
    executor: ExecutorConfig = ExecutorConfig()
    output: Path | None = None

    @model_validator(mode="after")
    def _unique_labels(self) -> Protocol:
        # Method labels are checked in `validate_plugins`, once plugins have set their default variants.
        labels = [d.label for d in self.detectors]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"detector labels must be unique, '{dupes[0]}' repeats: give each a 'variant'")
        return self

    def hash(self) -> str:
        return config_hash(self.model_dump(mode="json"))

    def output_dir(self) -> Path:
        return self.output if self.output is not None else Path("runs") / self.name


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(text: str) -> str:
    """Replace ${VAR} by its value; an unset variable is a user error naming it."""

    def sub(match: re.Match[str]) -> str:
        var = match.group(1)
        if var not in os.environ:
            raise ValueError(f"environment variable ${{{var}}} is not set: export it or write the path")
        return os.environ[var]

    return _ENV.sub(sub, text)


def config_hash(payload: Any) -> str:
    """A stable short hash of any JSON-able configuration."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def field_path(loc: tuple[Any, ...]) -> str:
    """('methods', 1, 'options', 'x') -> 'methods[1].options.x'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _first_error(exc: ValidationError, source: str, prefix: tuple[Any, ...] = ()) -> UserError:
    err = exc.errors()[0]
    loc = prefix + tuple(p for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (remove it or check its spelling)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return UserError(f"{source}: {field_path(loc)}: {msg}")


def load_protocol(path: str | Path, overrides: dict[str, Any] | None = None) -> Protocol:
    """Read, validate and resolve a protocol file (plugins' own option schemas included)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: protocol file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a protocol is a YAML mapping with at least 'name', 'dataset', 'methods'")
    raw.update(overrides or {})
    return parse_protocol(raw, source=str(path))


def parse_protocol(raw: dict[str, Any], source: str = "<protocol>") -> Protocol:
    try:
        protocol = Protocol.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, source) from None
    validate_plugins(protocol, source)
    return protocol


def parse_dataset(raw: dict[str, Any], source: str = "<dataset>") -> DatasetConfig:
    """A `dataset` section on its own (the `data check` options), errors naming the field."""
    try:
        return DatasetConfig.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        raise _first_error(exc, source, ("dataset",)) from None


def validate_plugins(protocol: Protocol, source: str) -> None:
    """Check names against the registries and options against each plugin's own schema."""
    for i, method in enumerate(protocol.methods):
        cls = _load_plugin("methods", method.name, source, ("methods", i, "name"))
        method.options = _validated_options(cls, method.options, source, ("methods", i, "options"))
        if method.variant is None and hasattr(cls, "default_variant"):
            method.variant = cls.default_variant(method.options)
    labels = [m.label for m in protocol.methods]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise UserError(f"{source}: methods[{i}]: method labels must be unique, '{label}' repeats: "
                            "give each a 'variant'")
    for i, det in enumerate(protocol.detectors):
        cls = _load_plugin("detectors", det.name, source, ("detectors", i, "name"))
        det.options = _validated_options(cls, det.options, source, ("detectors", i, "options"))
    for i, metric in enumerate(protocol.metrics):
        _load_plugin("metrics", metric, source, ("metrics", i))


def _load_plugin(kind: registry.Kind, name: str, source: str, loc: tuple[Any, ...]) -> Any:
    try:
        return registry.load(kind, name)
    except UserError as exc:
        raise UserError(f"{source}: {field_path(loc)}: {exc}") from None


def _validated_options(cls: Any, options: dict[str, Any], source: str, loc: tuple[Any, ...]) -> dict:
    schema = getattr(cls, "Options", None)
    if schema is None:
        if options:
            raise UserError(f"{source}: {field_path(loc)}: this plugin takes no options")
        return {}
    try:
        return schema.model_validate(options).model_dump(mode="json")
    except ValidationError as exc:
        raise _first_error(exc, source, loc) from None
