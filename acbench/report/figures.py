"""Figures (matplotlib, PNG, + PDF when the report writes LaTeX): grouped bars, ablation chart,
quality-vs-utility scatter, detection metrics against the synthetic share."""

from __future__ import annotations

import contextvars

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from acbench.report.correlation import cell_means
from acbench.report.load import DOWNSTREAM_SCOPES, RANDOM_NOTE_SHORT, display_name
from acbench.report.tables import MEAN_ROW, MetricTable, category_rows

plt.rcParams.update({"figure.dpi": 150, "savefig.dpi": 150, "font.size": 9, "axes.spines.top": False,
                     "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True})


def method_colours(labels: list[str]) -> dict[str, tuple]:
    """One fixed colour per method label, in protocol order, shared by every figure of a report."""
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


#: Whether `save` also writes a PDF (for LaTeX papers): set by `render_report` from the report formats
#: (`tex` or `pdf`); rendering a PDF costs about as much as the PNG.
WRITE_PDF: contextvars.ContextVar[bool] = contextvars.ContextVar("WRITE_PDF", default=True)


def save(fig: plt.Figure, stem: Path, dpi: float | None = None, tight: bool = True) -> Path:
    """Write stem.png (and stem.pdf, see `WRITE_PDF`); return the PNG path."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    bbox = "tight" if tight else None
    fig.savefig(stem.with_suffix(".png"), bbox_inches=bbox, dpi=dpi or "figure")
    if WRITE_PDF.get():
        fig.savefig(stem.with_suffix(".pdf"), bbox_inches=bbox)
    plt.close(fig)
    return stem.with_suffix(".png")


def _mark_random(fig: plt.Figure, random: bool) -> None:
    if random:
        fig.text(0.5, 1.0, RANDOM_NOTE_SHORT, color="#c00000", ha="center", va="bottom", weight="bold")


def grouped_bars(table: MetricTable, stem: Path, colours: dict[str, tuple] | None = None) -> Path:
    """Categories (and the mean) on the x axis, one bar per method, std over seeds as error bars."""
    labels, rows = list(table.mean.columns), list(table.mean.index)
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(min(14.0, max(4.0, 0.5 * len(rows) * max(len(labels), 2) ** 0.5 + 2)), 3.2))
    x = np.arange(len(rows))
    for i, label in enumerate(labels):
        values = table.mean[label].to_numpy(dtype=float) * table.scale
        several_seeds = table.count[label].to_numpy(dtype=float) > 1
        errors = np.where(several_seeds, np.nan_to_num(table.std[label].to_numpy(dtype=float)), 0) * table.scale
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width,
               yerr=errors if several_seeds.any() else None, capsize=2,
               label=label + (" †" if label in table.random else ""), error_kw={"elinewidth": 0.8},
               color=(colours or {}).get(label))
    ax.set_xticks(x, rows, rotation=30 if len(rows) > 6 else 0, ha="right" if len(rows) > 6 else "center")
    ax.set_title(table.title, fontsize=9)
    ax.set_ylabel(display_name(table.metric) + (" (%)" if table.percent else ""))
    if MEAN_ROW in rows and len(rows) > 1:  # the mean is not a category: set it apart
        ax.axvline(len(rows) - 1.5, color="0.6", lw=0.8, ls=":")
    ax.legend(fontsize=7, ncols=min(len(labels), 4), loc="upper center", bbox_to_anchor=(0.5, -0.18),
              frameon=False)
    _mark_random(fig, bool(table.random))
    return save(fig, stem)


def ablation_chart(frame: pd.DataFrame, stem: Path) -> Path:
    """One small panel per metric: the mean over categories of each ablation variant."""
    metrics = list(frame.columns[4:])
    cols = min(len(metrics), 4)
    nrows = int(np.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 2.4 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        values = pd.to_numeric(frame[metric], errors="coerce")
        bars = ax.bar(frame["variant"], values, color=["#2b6cb0"] + ["#a0aec0"] * (len(frame) - 1))
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_title(metric, fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        finite = values.dropna()
        if not finite.empty:
            span = max(finite.max() - finite.min(), 1e-9)
            ax.set_ylim(max(0.0, finite.min() - span), finite.max() + 0.6 * span)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle("AnomalyControl ablation (mean over categories)")
    fig.tight_layout()
    return save(fig, stem)


def quality_utility_scatter(frame: pd.DataFrame, quality: str, downstream: str, stats: str, stem: Path,
                            random: bool = False, colours: dict[str, tuple] | None = None) -> Path:
    """One point per method x category; colour = method; rank correlations in the title."""
    cells = cell_means(frame)[[quality, downstream]].dropna()
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    order = list(colours or {})
    groups = sorted(cells.groupby(level="label", sort=False), key=lambda g: order.index(g[0]) if g[0] in order
                    else len(order))
    for label, part in groups:
        ax.scatter(part[quality], part[downstream], label=label, s=22, color=(colours or {}).get(label))
        # each method named at the centre of its points, so the figure reads without the legend
        ax.annotate(label, (part[quality].mean(), part[downstream].mean()), fontsize=6, alpha=0.8,
                    xytext=(3, 3), textcoords="offset points", color=(colours or {}).get(label))
    metric, _, detector = downstream.partition(" (")
    ax.set_xlabel(display_name(quality))
    ax.set_ylabel(f"{display_name(metric)} — {detector.rstrip(')')}" if detector else display_name(metric))
    ax.set_title(stats, fontsize=8)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _mark_random(fig, random)
    return save(fig, stem)


def synthetic_share_plot(frame: pd.DataFrame, stem: Path, colours: dict[str, tuple] | None = None) -> Path | None:
    """Detection metrics (mean over categories and seeds) against the detectors' synthetic share."""
    if frame.empty or "synthetic_ratio" not in frame.columns:
        return None
    rows = category_rows(frame)
    rows = rows[rows["scope"].isin(DOWNSTREAM_SCOPES)].copy()
    rows["synthetic_ratio"] = pd.to_numeric(rows["synthetic_ratio"], errors="coerce")
    rows = rows.dropna(subset=["synthetic_ratio"])
    if rows["synthetic_ratio"].nunique() < 2:
        return None
    rows["detector_name"] = rows["detector"].str.split("/").str[0]
    panels = sorted(rows.groupby(["detector_name", "metric"]).groups)
    cols = min(len(panels), 3)
    nrows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    for ax, (det, metric) in zip(axes.flat, panels, strict=False):
        part = rows[(rows["detector_name"] == det) & (rows["metric"] == metric)]
        curve = part.groupby(["label", "synthetic_ratio"])["value"].mean().reset_index()
        for label, line in curve.groupby("label", sort=False):
            ax.plot(line["synthetic_ratio"], line["value"], marker="o", ms=3, label=label,
                    color=(colours or {}).get(label))
        ax.set_title(f"{display_name(metric)} — {det}", fontsize=8)
        ax.set_xlabel("synthetic share of anomalous samples")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, fontsize=7, frameon=False, loc="upper center", ncols=min(len(labels), 5),
               bbox_to_anchor=(0.5, 0.0))
    return save(fig, stem)
