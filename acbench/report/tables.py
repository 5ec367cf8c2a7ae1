"""Per-metric tables (categories x methods) built from a long-format results frame.

A table holds numbers only (mean, std and count over seeds, optional confidence interval); the
renderers in `formats` turn it into Markdown, LaTeX, CSV or HTML with the same highlighting.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from acbench.report.load import (PERCENT_METRICS, PIXEL_METRICS, arrow, box_labels, display_name, metric_direction,
                                 random_labels)

if TYPE_CHECKING:
    from acbench.report.significance import ImageTest

MEAN_ROW = "mean"
#: A ranking needs at least this many paired units (seeds in a category row; categories x seeds in the mean
#: row): with fewer, no resampling can tell two methods apart, and the row shows a tie.
MIN_PAIRED_UNITS = 3
BOOTSTRAP_RESAMPLES = 2000
TEST_IMAGES, TEST_UNITS = "images", "units"  # the two tests behind a mark (`MetricTable.decided`)
#: Extra result columns that make rows of the same metric non-comparable: each value gets its own table.
SPLIT_COLUMNS = ("variant_of_metric", "selection")


@dataclass
class MetricTable:
    metric: str
    detector: str
    direction: bool | None
    mean: pd.DataFrame  # index: categories + MEAN_ROW; columns: method labels
    std: pd.DataFrame
    count: pd.DataFrame  # seeds behind each cell
    ci_low: pd.DataFrame | None = None
    ci_high: pd.DataFrame | None = None
    random: set[str] = field(default_factory=set)  # labels computed with random weights
    split: dict[str, str] = field(default_factory=dict)  # SPLIT_COLUMNS values of this table
    #: row -> the paired units behind it (index: seed, or (category, seed) for the mean row; columns: labels)
    units: dict[str, pd.DataFrame] = field(default_factory=dict)
    boxes: set[str] = field(default_factory=set)  # labels trained / scored on box masks (pixel metrics only)
    #: the paired bootstrap over test images (image AUROC / AP with predictions.csv, pixel AUROC / AP with
    #: anomaly_maps.npz; see `significance`)
    image_test: ImageTest | None = None
    #: row -> the tests that applied to its compared pairs (TEST_IMAGES, TEST_UNITS), filled by `ranks`
    decided: dict[str, set[str]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        name = f"{self.metric}__{self.detector}" if self.detector else self.metric
        name += "".join(f"__{v}" for v in self.split.values() if v)
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)

    @property
    def percent(self) -> bool:
        return self.metric in PERCENT_METRICS

    @property
    def scale(self) -> float:
        return 100.0 if self.percent else 1.0

    @property
    def title(self) -> str:
        text = display_name(self.metric) + (" (%)" if self.percent else "")
        text += f" {arrow(self.direction)}" if self.direction is not None else ""
        if self.split.get("variant_of_metric"):
            text += f" [{self.split['variant_of_metric']}]"
        text = f"{text} — {self.detector}" if self.detector else text
        if self.split.get("selection") == "test":
            text += " (epoch selected on the test set: optimistic)"
        return text

    @property
    def digits(self) -> int:
        """Decimals: one for percentages and large values, more for small ones (IS, IC-LPIPS, KID)."""
        if self.percent:
            return 1
        finite = np.abs(self.mean.to_numpy(dtype=float))
        finite = finite[np.isfinite(finite)]
        if finite.size and np.all(finite == np.round(finite)):  # counts
            return 0
        top = float(finite.max()) if finite.size else 0.0
        return 1 if top >= 10 else 2 if top >= 1 else 3

    def display(self, value: float) -> float:
        return round(value * self.scale, self.digits)

    def ranks(self, row: str) -> dict[str, int]:
        """label -> 1 (best) or 2 (second best) in one row, only where the data separate them.

        The best is marked when it is `separated` from the runner-up; the second likewise from the third,
        and only under a marked best. Anything else is a tie: no mark.
        """
        if self.direction is None:
            return {}
        values = {c: self.display(v) for c, v in self.mean.loc[row].items() if not pd.isna(v)}
        order = sorted(values, key=lambda c: values[c], reverse=self.direction)
        out: dict[str, int] = {}
        for rank, (a, b) in enumerate(zip(order, order[1:]), start=1):
            if rank > 2 or values[a] == values[b] or not self.separated(row, a, b):
                break
            out[a] = rank
        return out

    def separated(self, row: str, better: str, worse: str) -> bool:
        """Whether `better` beats `worse` in `row` by every test that applies (none applies: a tie).

        Over units: a paired bootstrap of the mean difference over shared seeds (categories x seeds in the
        mean row), given at least MIN_PAIRED_UNITS of them. Over test images (`image_test`: image AUROC /
        AP with per-image predictions, pixel AUROC / AP with the saved anomaly maps): the same draws of the
        test images for both methods.
        """
        sign = 1 if self.direction else -1
        verdicts = {}
        units = self.units.get(row)
        if units is not None and better in units and worse in units:
            pairs = units[[better, worse]].dropna()
            if len(pairs) >= MIN_PAIRED_UNITS:
                diff = (pairs[better] - pairs[worse]).to_numpy(dtype=float) * sign
                verdicts[TEST_UNITS] = paired_bootstrap_low(diff) > 0
        if self.image_test is not None:
            low = self.image_test.low(row, better, worse, sign)
            if low is not None:
                verdicts[TEST_IMAGES] = low > 0
        self.decided.setdefault(row, set()).update(verdicts)
        return bool(verdicts) and all(verdicts.values())


def paired_bootstrap_low(diff: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """Lower end of the 95% percentile interval of mean(diff) under resampling of the pairs (fixed seed)."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5))


def category_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Category-level rows with a value (per-type rows have a non-empty anomaly_type)."""
    if frame.empty:
        return frame
    return frame[(frame["anomaly_type"] == "") & frame["value"].notna()]


def _ordered(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(values.tolist()))


def _one_table(part: pd.DataFrame, metric: str, detector: str) -> MetricTable:
    per_seed = part.groupby(["category", "label", "seed"], sort=False)["value"].mean().reset_index()
    cats = sorted(per_seed["category"].unique())
    labels = _ordered(part["label"])
    grouped = per_seed.groupby(["category", "label"])["value"]
    seed_means = per_seed.groupby(["label", "seed"])["value"].mean().groupby("label")

    def frame_of(cells: pd.Series, summary: pd.Series) -> pd.DataFrame:
        table = cells.unstack("label").reindex(index=cats, columns=labels)
        table.loc[MEAN_ROW] = summary.reindex(labels)
        return table

    return MetricTable(
        metric, detector, metric_direction(metric),
        mean=frame_of(grouped.mean(), seed_means.mean()),
        std=frame_of(grouped.std(ddof=1), seed_means.std(ddof=1)),
        count=frame_of(grouped.count(), seed_means.count()),
        random=random_labels(part),  # only the rows of this table: a random detector taints its own tables
        units=_units(per_seed, cats, labels),
        boxes=box_labels(part) if metric in PIXEL_METRICS else set(),
    )


def _units(per_seed: pd.DataFrame, cats: list[str], labels: list[str]) -> dict[str, pd.DataFrame]:
    """Per category: seed x label values; for the mean row: (category, seed) x label values."""
    wide = per_seed.pivot_table(index=["category", "seed"], columns="label", values="value", aggfunc="mean")
    wide = wide.reindex(columns=labels)
    units = {c: wide.xs(c, level="category") for c in cats if c in wide.index.get_level_values("category")}
    units[MEAN_ROW] = wide
    return units


def build_tables(frame: pd.DataFrame) -> list[MetricTable]:
    """One table per (metric, detector, split values): quality metrics first, then each detector's."""
    rows = category_rows(frame)
    if rows.empty:
        return []
    splits = [c for c in SPLIT_COLUMNS if c in rows.columns]
    rows = rows.assign(**{c: rows[c].fillna("").astype(str).replace("nan", "") for c in splits})
    tables = []
    for keys, part in rows.groupby(["detector", "metric", *splits], sort=True):
        detector, metric, *values = (str(k) for k in keys)
        table = _one_table(part, metric, detector)
        table.split = dict(zip(splits, values, strict=True))
        tables.append(table)
    return sorted(tables, key=lambda t: (t.detector != "", t.detector, _metric_order(t.metric), t.key))


def _metric_order(metric: str) -> tuple[int, str]:
    from acbench.report.load import DISPLAY_NAMES

    order = list(DISPLAY_NAMES)
    return (order.index(metric), metric) if metric in order else (len(order), metric)


def attach_intervals(table: MetricTable, intervals: pd.DataFrame) -> None:
    """Put bootstrap intervals (columns detector, metric, label, category, low, high) into a table."""
    part = intervals[(intervals["detector"] == table.detector) & (intervals["metric"] == table.metric)]
    if part.empty:
        return
    low = part.pivot_table(index="category", columns="label", values="low", aggfunc="mean")
    high = part.pivot_table(index="category", columns="label", values="high", aggfunc="mean")
    table.ci_low = low.reindex(index=table.mean.index, columns=table.mean.columns)
    table.ci_high = high.reindex(index=table.mean.index, columns=table.mean.columns)


def cell_parts(table: MetricTable, row: str, label: str) -> tuple[str, str, str] | None:
    """(value, '± std' or '', '[low, high]' or '') as display strings; None for an empty cell."""
    value = table.mean.at[row, label]
    if pd.isna(value):
        return None
    d = table.digits
    main = f"{table.display(value):.{d}f}"
    std, n = table.std.at[row, label], table.count.at[row, label]
    spread = f"{table.display(std):.{d}f}" if n > 1 and not pd.isna(std) else ""
    interval = ""
    if table.ci_low is not None and row in table.ci_low.index and label in table.ci_low.columns:
        lo, hi = table.ci_low.at[row, label], table.ci_high.at[row, label]
        if not (pd.isna(lo) or pd.isna(hi)):
            interval = f"{table.display(lo):.{d}f}, {table.display(hi):.{d}f}"
    return main, spread, interval


def table_frame(table: MetricTable) -> pd.DataFrame:
    """The long CSV form: category, method, mean, std, seeds (+ ci_low, ci_high), raw (unscaled) values."""
    out = pd.DataFrame({
        "category": np.repeat(table.mean.index, len(table.mean.columns)),
        "method": np.tile(table.mean.columns, len(table.mean.index)),
        "mean": table.mean.to_numpy().ravel(),
        "std": table.std.to_numpy().ravel(),
        "seeds": table.count.to_numpy().ravel(),
    })
    if table.ci_low is not None:
        out["ci_low"] = table.ci_low.to_numpy().ravel()
        out["ci_high"] = table.ci_high.to_numpy().ravel()
    out.insert(0, "detector", table.detector)
    out.insert(0, "metric", table.metric)
    out["higher_is_better"] = table.direction
    out["random_weights"] = out["method"].isin(table.random)
    if table.boxes:
        out["box_masks"] = out["method"].isin(table.boxes)
    return out[out["mean"].map(lambda v: not (isinstance(v, float) and math.isnan(v)))]
