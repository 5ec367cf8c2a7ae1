"""Published numbers (reports/references/*.yaml) and their comparison with measured values.

A reference file holds tables transcribed from papers, each with its citation, dataset, protocol and
provenance; per method, values per category (and the paper's own `mean`) in the table's column
order. `compare` puts "X (paper)" beside "X (acbench)" with the difference, in the paper's units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from acbench.errors import UserError
from acbench.report.load import display_name
from acbench.report.tables import MEAN_ROW, MetricTable

REFERENCES_DIR = Path(__file__).resolve().parents[2] / "reports" / "references"
#: protocol dataset kinds -> the dataset names used in reference files
DATASET_NAMES = {"mvtec": "mvtec_ad", "visa": "visa"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Column(Strict):
    metric: str = Field(description="acbench metric name in results.csv (e.g. pixel_ap)")
    detector: str = Field("", description="acbench detector whose rows it compares with; '' for quality")
    scale: float = Field(1.0, gt=0, description="paper value = acbench value x scale (100 for percent)")


class MethodValues(Strict):
    name: str = Field(description="the method as the paper names it")
    acbench: str | None = Field(None, description="acbench method label (or name) to compare with")
    source: str | None = Field(None, description="where this row was read, when it differs from the table's")
    values: dict[str, list[float | None]] = Field(description="category or 'mean' -> values in column order")


class ReferenceTable(Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    source: str = Field(description="paper and table number the numbers were read from")
    provenance: Literal["primary", "secondary", "recalled-crosschecked", "recalled", "not-retrieved"]
    dataset: Literal["mvtec_ad", "visa", "mvtec_3d", "mpdd"]
    protocol: str = Field(description="how the numbers were produced, as far as the paper says")
    columns: dict[str, Column] = Field(min_length=1)
    methods: list[MethodValues] = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _row_lengths(self) -> ReferenceTable:
        width = len(self.columns)
        for method in self.methods:
            for category, row in method.values.items():
                if len(row) != width:
                    raise ValueError(f"{method.name} / {category}: {len(row)} values for {width} columns "
                                     f"({', '.join(self.columns)})")
        return self


class ReferenceFile(Strict):
    paper: str
    citation: str
    url: str | None = None
    tables: list[ReferenceTable] = Field(min_length=1)


def load_reference_file(path: str | Path) -> ReferenceFile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
        return ReferenceFile.model_validate(raw)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UserError(f"{path}: {where}: {err['msg']}") from None


def load_references(folder: str | Path = REFERENCES_DIR) -> list[tuple[ReferenceFile, ReferenceTable]]:
    """Every table of every reference file in a folder (sorted by file name)."""
    out = []
    for path in sorted(Path(folder).glob("*.yaml")):
        ref = load_reference_file(path)
        out += [(ref, table) for table in ref.tables]
    return out


def _matching_labels(wanted: str, labels: list[str]) -> list[str]:
    exact = [lb for lb in labels if lb == wanted]
    return exact or [lb for lb in labels if lb.split("/", 1)[0] == wanted]


def compare(tables: list[MetricTable], references: list[tuple[ReferenceFile, ReferenceTable]],
            dataset: str) -> list[tuple[str, pd.DataFrame]]:
    """(title, frame) per (reference table, paper method, matched acbench label): rows = categories,
    for each comparable column "<metric> (paper)", "<metric> (acbench)" and "<metric> Δ"."""
    by_key: dict[tuple[str, str], MetricTable] = {}
    for t in tables:  # the plain table of a metric (no metric variant) stands for it
        if not t.split.get("variant_of_metric"):
            by_key.setdefault((t.metric, t.detector), t)
    out = []
    for _ref, table in references:
        if table.dataset != dataset:
            continue
        comparable = [(i, col, by_key[(col.metric, col.detector)]) for i, col in enumerate(table.columns.values())
                      if (col.metric, col.detector) in by_key]
        for method in table.methods:
            if not method.acbench or not comparable:
                continue
            labels = {lb for _, _, measured in comparable for lb in measured.mean.columns}
            for label in _matching_labels(method.acbench, sorted(labels)):
                frame = _side_by_side(method, comparable, label)
                if frame is not None:
                    out.append((f"{method.name} (paper) vs {method.name} (acbench: {label}) — {table.source}",
                                frame))
    return out


def _side_by_side(method: MethodValues, comparable: list[tuple[int, Column, MetricTable]],
                  label: str) -> pd.DataFrame | None:
    """Paper value, measured value in the paper's units, and their difference, per category and metric."""
    cells: dict[str, dict[str, float]] = {}
    for position, column, measured in comparable:
        name = display_name(column.metric) + (" (%)" if column.scale == 100 else "")
        for category, values in method.values.items():
            row = MEAN_ROW if category == "mean" else category
            paper = values[position]
            if paper is None or row not in measured.mean.index or label not in measured.mean.columns:
                continue
            ours = measured.mean.at[row, label]
            if pd.isna(ours):
                continue
            ours = float(ours) * column.scale
            cells.setdefault(category, {}).update({f"{name} (paper)": paper, f"{name} (acbench)": round(ours, 3),
                                                   f"{name} Δ": round(ours - paper, 3)})
    if not cells:
        return None
    frame = pd.DataFrame.from_dict(cells, orient="index")
    frame.index.name = "category"
    order = [c for c in frame.index if c != "mean"] + (["mean"] if "mean" in frame.index else [])
    return frame.loc[order]
