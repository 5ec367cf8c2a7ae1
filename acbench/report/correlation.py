"""Does generation quality predict downstream utility? Rank correlations across methods x categories.

For every quality metric (scope `quality`, with a direction) and every downstream metric (per
detector), the points are (method, category) cells averaged over seeds; Spearman's rho and
Kendall's tau (scipy) say whether a better quality score goes with a better detector.
"""

from __future__ import annotations

import pandas as pd
from scipy.stats import kendalltau, spearmanr

from acbench.report.load import DOWNSTREAM_SCOPES, NO_METHOD, display_name, metric_direction
from acbench.report.tables import category_rows

MIN_POINTS = 4


def _comparable_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Category rows of synthesis methods, without test-set-selected (optimistic) detector rows, each
    with its column name: metric[variant] (detector)."""
    rows = category_rows(frame)
    rows = rows[rows["method"] != NO_METHOD]
    if "selection" in rows.columns:
        rows = rows[rows["selection"].astype(str) != "test"]
    variant = rows["variant_of_metric"].fillna("").astype(str) if "variant_of_metric" in rows.columns \
        else pd.Series("", index=rows.index)
    names = [f"{m}[{v}]" if v and v != "nan" else m for m, v in zip(rows["metric"], variant, strict=True)]
    column = [f"{n} ({d})" if d else n for n, d in zip(names, rows["detector"], strict=True)]
    return rows.assign(column=column)


def cell_means(frame: pd.DataFrame) -> pd.DataFrame:
    """(label, category) x metric-column, seed-averaged, without the no-synthesis reference."""
    rows = _comparable_rows(frame)
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot_table(index=["label", "category"], columns="column", values="value", aggfunc="mean")


def metric_pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(quality column, downstream column) pairs present in the results."""
    rows = _comparable_rows(frame)
    quality = rows[(rows["scope"] == "quality") & rows["metric"].map(lambda m: metric_direction(m) is not None)]
    downstream = rows[rows["scope"].isin(DOWNSTREAM_SCOPES) & (rows["detector"] != "")]
    return [(q, d) for q in sorted(set(quality["column"])) for d in sorted(set(downstream["column"]))]


def correlations(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (quality, downstream) pair with enough points from at least two methods."""
    if frame.empty:
        return pd.DataFrame()
    cells = cell_means(frame)
    out = []
    for quality, downstream in metric_pairs(frame) if not cells.empty else []:
        if quality not in cells.columns or downstream not in cells.columns:  # e.g. only the no-synthesis row
            continue
        both = cells[[quality, downstream]].dropna()
        methods = both.index.get_level_values("label").nunique()
        if len(both) < MIN_POINTS or methods < 2 or both.nunique().min() < 2:
            continue
        rho, p_rho = spearmanr(both[quality], both[downstream])
        tau, p_tau = kendalltau(both[quality], both[downstream])
        base = quality.split("[")[0]
        sign = -1.0 if metric_direction(base) is False else 1.0  # lower-is-better quality: flip sign
        shown = display_name(base) + (quality[len(base):] if quality != base else "")
        out.append({"quality": shown, "quality_column": quality, "downstream": downstream, "points": len(both),
                    "methods": methods, "spearman_rho": sign * rho, "spearman_p": p_rho,
                    "kendall_tau": sign * tau, "kendall_p": p_tau})
    return pd.DataFrame(out)


def correlation_display(table: pd.DataFrame) -> pd.DataFrame:
    """Formatted for the report: 'ρ' and 'τ' with p-values, oriented so + means 'better quality, better detector'."""
    if table.empty:
        return table
    shown = pd.DataFrame({
        "downstream": table["downstream"],
        "points": table["points"].astype(int),
        "Spearman ρ (p)": [f"{r:+.2f} ({p:.2g})" for r, p in zip(table["spearman_rho"], table["spearman_p"],
                                                                  strict=True)],
        "Kendall τ (p)": [f"{t:+.2f} ({p:.2g})" for t, p in zip(table["kendall_tau"], table["kendall_p"],
                                                                 strict=True)],
    })
    shown.index = pd.Index(table["quality"], name="quality metric")
    return shown
