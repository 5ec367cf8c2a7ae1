"""The ablation layout (AnomalyControl's ✓/✗ table): rows = variants, ✓/✗ per module, one column per metric.

A method is part of the ablation when its plugin declares `ablations` (variant name -> an object with
`modules`, the on/off of each of `ablation_modules`, `meaning` and `reading`) and its protocol options
carry `ablation:`. The grid reads that declaration, the same table the method's model reads, so what
the report says a variant switches off is what the model switched off. The variant name is used as a
fall-back for runs without a manifest entry.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from acbench import registry
from acbench.errors import UserError
from acbench.report.formats import Cell, Grid
from acbench.report.tables import MEAN_ROW, MetricTable


def method_ablations(name: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(module names, variant -> declaration) of a method plugin; empty when it declares none."""
    try:
        cls = registry.load("methods", name)
    except UserError:  # a run of a method that is no longer installed: no ablation layout
        return (), {}
    return tuple(getattr(cls, "ablation_modules", ())), dict(getattr(cls, "ablations", {}) or {})


def _method_name(label: str) -> str:
    return label.split("/", 1)[0]


def ablation_labels(methods_config: list[dict], labels: list[str]) -> dict[str, str]:
    """method label -> ablation variant, for the labels present in the results."""
    found: dict[str, str] = {}
    present = [_method_name(lb) for lb in labels]
    for method in methods_config:
        option = (method.get("options") or {}).get("ablation")
        label = f"{method['name']}/{method['variant']}" if method.get("variant") else method["name"]
        if present.count(method["name"]) < 2:  # one row of a method is no ablation (and loading it costs seconds)
            continue
        if label in labels and option is not None and option in method_ablations(method["name"])[1]:
            found[label] = option
    if not found and not methods_config:  # no manifest information: recognise the variant names themselves
        for label in labels:
            variant = label.split("/", 1)[1] if "/" in label else ""
            if variant and variant in method_ablations(_method_name(label))[1]:  # loading a plugin costs seconds
                found[label] = variant
    return found


def _presets(methods_config: list[dict], labels: list[str]) -> list[str]:
    """The `preset` of the ablation's methods (e.g. official / acbench, defaults included), for the title."""
    presets = set()
    for method in methods_config:
        label = f"{method['name']}/{method['variant']}" if method.get("variant") else method["name"]
        if label not in labels:
            continue
        try:
            options = registry.load("methods", method["name"]).Options.model_validate(method.get("options") or {})
        except Exception:  # options of another version: the title just leaves the preset out
            continue
        if getattr(options, "preset", None):
            presets.add(str(options.preset))
    return sorted(presets)


def ablation_grid(tables: list[MetricTable], methods_config: list[dict]) -> Grid | None:
    """The paper's ablation table from the category means of every directional metric."""
    labels = list(dict.fromkeys(lb for t in tables for lb in t.mean.columns))
    variants = ablation_labels(methods_config, labels)
    if len(variants) < 2:
        return None
    names = {_method_name(lb) for lb in variants}
    if len(names) > 1:  # two methods' ablations in one study: lay out the first only
        first = sorted(names)[0]
        variants = {lb: v for lb, v in variants.items() if _method_name(lb) == first}
    method = _method_name(next(iter(variants)))
    modules, declared = method_ablations(method)
    ordered = sorted(variants, key=lambda lb: list(declared).index(variants[lb]))
    metric_tables = [t for t in tables if t.direction is not None and any(lb in t.mean.columns for lb in ordered)]
    header = ["variant", *modules] + [t.title for t in metric_tables]
    rows = [[Cell(variants[lb])] + [Cell("✓" if on else "✗") for on in declared[variants[lb]].modules]
            for lb in ordered]
    for table in metric_tables:
        sub = MetricTable(table.metric, table.detector, table.direction,
                          table.mean.reindex(columns=ordered), table.std.reindex(columns=ordered),
                          table.count.reindex(columns=ordered),
                          units={row: u.reindex(columns=ordered) for row, u in table.units.items()},
                          image_test=table.image_test)
        ranks = sub.ranks(MEAN_ROW)
        for row, label in zip(rows, ordered, strict=True):
            value = sub.mean.at[MEAN_ROW, label]
            text = "–" if pd.isna(value) else f"{table.display(value):.{table.digits}f}"
            row.append(Cell(text, ranks.get(label, 0)))
    images = ", ".join(t.title for t in metric_tables if t.image_test is not None)
    notes = ["mean over categories; ✓ module on, ✗ off; best in bold, second underlined where a paired "
             "bootstrap over categories x seeds separates them (else tied, unmarked)"
             + (f"; {images}: over test images too (where both apply, both must separate)" if images else "")]
    for lb in ordered:
        variant = declared[variants[lb]]
        mark = " (this project's reading: the paper's definition could not be verified)" if variant.reading else ""
        notes.append(f"{variants[lb]}: {variant.meaning}{mark}")
    presets = _presets(methods_config, ordered)
    title = f"Ablation of {method}" + (f" (preset {', '.join(presets)})" if presets else "")
    return Grid(title, header, rows, notes)


def ablation_frame(grid: Grid) -> pd.DataFrame:
    return pd.DataFrame([[c.text for c in row] for row in grid.rows], columns=grid.header)
