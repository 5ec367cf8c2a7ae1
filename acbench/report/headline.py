"""The table a paper prints first: one row per method, the study's main metrics as columns.

Each cell is the mean over categories (± std over seeds when there are several); best and second are
marked by the same significance rule as every other table (`MetricTable.ranks` on the mean row). The
detection columns come from the first detector of the study trained on synthetic anomalies; published
values for the method (reports/references/) stand beside it with their source.
"""

from __future__ import annotations

import pandas as pd

from acbench.report.formats import RANDOM_NOTE, RANKING_NOTE, Cell, Grid, decided_by, marks_note
from acbench.report.load import display_name
from acbench.report.references import ReferenceFile, ReferenceTable
from acbench.report.tables import MEAN_ROW, MetricTable, cell_parts

QUALITY = ("is", "ic_lpips", "ic_lpips_ad", "kid")
DETECTION = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")


def _plain(tables: list[MetricTable]) -> list[MetricTable]:
    return [t for t in tables if not t.split.get("variant_of_metric") and t.split.get("selection") != "test"]


def headline_detector(tables: list[MetricTable]) -> str:
    """The first detector (in table order) with detection rows for more than the no-synthesis reference."""
    for t in _plain(tables):
        if t.detector and t.metric in DETECTION and any(lb != "none" for lb in t.mean.columns):
            return t.detector
    return ""


def grouped_labels(labels: list[str]) -> list[str]:
    """Method labels with every variant of a method next to the method's first appearance."""
    order = list(dict.fromkeys(lb.split("/", 1)[0] for lb in labels))
    return sorted(labels, key=lambda lb: (order.index(lb.split("/", 1)[0]), labels.index(lb)))


def published_values(label: str, references: list[tuple[ReferenceFile, ReferenceTable]], dataset: str) -> str:
    """'IS 1.80, IC-LPIPS 0.32 (SeaS README table); …' for the label's method, or ''."""
    method = label.split("/", 1)[0]
    found = []
    for _ref, table in references:
        if table.dataset != dataset:
            continue
        for row in table.methods:
            if row.acbench not in (label, method) or "mean" not in row.values:
                continue
            values = [f"{display_name(col.metric)} {v:g}" for col, v in zip(table.columns.values(), row.values["mean"])
                      if v is not None]
            if values:
                found.append(f"{', '.join(values)} ({row.source or table.source})")
    return "; ".join(found)


def headline_grid(tables: list[MetricTable], references: list[tuple[ReferenceFile, ReferenceTable]] | None = None,
                  dataset: str = "") -> Grid | None:
    plain = _plain(tables)
    detector = headline_detector(plain)
    columns = [t for m in QUALITY for t in plain if not t.detector and t.metric == m]
    columns += [t for m in DETECTION for t in plain if t.detector == detector and t.metric == m]
    if not columns:
        return None
    labels = grouped_labels(list(dict.fromkeys(lb for t in columns for lb in t.mean.columns)))
    random = set().union(*(t.random for t in columns))
    published = {lb: published_values(lb, references or [], dataset) for lb in labels}
    show_published = any(published.values())
    header = ["method"] + [t.title.replace(f" — {detector}", "") for t in columns]
    header += ["published (source)"] if show_published else []
    ranks = {t.key: t.ranks(MEAN_ROW) for t in columns}
    rows = []
    for label in labels:
        method, _, variant = label.partition("/")
        name = f"{method} / {variant}" if variant else method
        cells = [Cell(name + (" †" if label in random else ""))]
        for t in columns:
            parts = cell_parts(t, MEAN_ROW, label) if label in t.mean.columns else None
            if parts is None:
                cells.append(Cell("–"))
                continue
            main, spread, _interval = parts
            cells.append(Cell(main + (f" ± {spread}" if spread else ""), ranks[t.key].get(label, 0)))
        if show_published:
            cells.append(Cell(published[label] or "–"))
        rows.append(cells)
    seeds = max(int(pd.to_numeric(t.count.loc[MEAN_ROW], errors="coerce").max()) for t in columns)
    notes = ["mean over categories" + (" ± std over seeds" if seeds > 1 else " (one seed)")]
    if detector:
        notes.append(f"detection columns: {detector}, tested on held-out real anomalies")
    if any(t.image_test is not None for t in columns):  # say which test decided each column
        notes.append(marks_note({display_name(t.metric): decided_by(t, MEAN_ROW) for t in columns}))
    else:
        notes.append(RANKING_NOTE)
    if show_published:
        notes.append("published: as printed by the source (reports/references/), for orientation; settings differ")
    if random:
        notes.append(RANDOM_NOTE)
    return Grid("Summary", header, rows, notes)
