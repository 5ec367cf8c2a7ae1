"""The AnomalyControl ablation layout: rows = variants, ✓/✗ per module, one column per metric.

A method is part of the ablation when its protocol options carry `ablation:` (full / no_csm /
no_asea / no_sga); the variant name is used as a fall-back for runs without a manifest entry.
"""

from __future__ import annotations

import pandas as pd

from acbench.report.formats import Cell, Grid
from acbench.report.tables import MEAN_ROW, MetricTable

MODULES = ("CSM", "ASEA", "SGA")
#: Which modules each ablation variant keeps. Without SGA no CSM feature reaches the UNet (plain
#: SD inpainting with the text prompt), so CSM and ASEA are off as well.
VARIANT_MODULES: dict[str, tuple[bool, bool, bool]] = {
    "full": (True, True, True),
    "no_csm": (False, True, True),
    "no_asea": (True, False, True),
    "no_sga": (False, False, False),
}


def ablation_labels(methods_config: list[dict], labels: list[str]) -> dict[str, str]:
    """method label -> ablation variant, for the labels present in the results."""
    found: dict[str, str] = {}
    for method in methods_config:
        option = (method.get("options") or {}).get("ablation")
        label = f"{method['name']}/{method['variant']}" if method.get("variant") else method["name"]
        if option in VARIANT_MODULES and label in labels:
            found[label] = option
    if not found:  # no manifest information: recognise the variant names themselves
        for label in labels:
            variant = label.split("/", 1)[1] if "/" in label else ""
            if variant in VARIANT_MODULES:
                found[label] = variant
    return found


def ablation_grid(tables: list[MetricTable], methods_config: list[dict]) -> Grid | None:
    """The paper's ablation table from the category means of every directional metric."""
    labels = list(dict.fromkeys(lb for t in tables for lb in t.mean.columns))
    variants = ablation_labels(methods_config, labels)
    if len(variants) < 2:
        return None
    ordered = sorted(variants, key=lambda lb: list(VARIANT_MODULES).index(variants[lb]))
    metric_tables = [t for t in tables if t.direction is not None and any(lb in t.mean.columns for lb in ordered)]
    header = ["variant", *MODULES] + [t.title for t in metric_tables]
    rows = [[Cell(variants[lb])] + [Cell("✓" if on else "✗") for on in VARIANT_MODULES[variants[lb]]]
            for lb in ordered]
    for table in metric_tables:
        sub = MetricTable(table.metric, table.detector, table.direction,
                          table.mean.reindex(columns=ordered), table.std.reindex(columns=ordered),
                          table.count.reindex(columns=ordered),
                          units={row: u.reindex(columns=ordered) for row, u in table.units.items()})
        ranks = sub.ranks(MEAN_ROW)
        for row, label in zip(rows, ordered, strict=True):
            value = sub.mean.at[MEAN_ROW, label]
            text = "–" if pd.isna(value) else f"{table.display(value):.{table.digits}f}"
            row.append(Cell(text, ranks.get(label, 0)))
    notes = ["mean over categories; ✓ module on, ✗ off; best in bold, second underlined where a paired "
             "bootstrap over categories x seeds separates them (else tied, unmarked)",
             "no_sga is plain SD inpainting with the text prompt: no CSM feature reaches the UNet"]
    return Grid("Ablation of AnomalyControl", header, rows, notes)


def ablation_frame(grid: Grid) -> pd.DataFrame:
    return pd.DataFrame([[c.text for c in row] for row in grid.rows], columns=grid.header)
