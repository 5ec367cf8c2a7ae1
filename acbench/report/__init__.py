"""Reports rendered from a run folder (`acbench report RUN_DIR`, also the last stage of `acbench run`).

    report/index.html      one self-contained page: manifest summary, tables, figures, samples
    report/index.md        the same in Markdown (figures linked)
    report/tables/         one file per table: .md, .tex (booktabs, for \\input{}), .csv
    report/figures/        PNG + PDF figures; report/samples/ the sample grids

Works with whatever results exist: every metric in results.csv gets its table, directions come from
the built-in list or the metric plugin's `higher_is_better`. `acbench report RUN --bootstrap 1000`
adds 95% intervals of image AUROC/AP from the detectors' predictions.csv (which also decide, whatever
`--bootstrap`, the best / second marks of those tables by a paired test over images); `--formats md,tex,csv`
chooses the per-table files. Scripts: scripts/screenshot_report.py (headless Chromium),
scripts/check_latex_tables.py (pdflatex).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from acbench.data.io import atomic_write_text
from acbench.report import document as doc
from acbench.report.ablation import ablation_frame, ablation_grid
from acbench.report.bootstrap import bootstrap_intervals
from acbench.report.caveats import caveats
from acbench.report.correlation import correlation_display, correlations
from acbench.report.figures import (
    WRITE_PDF,
    ablation_chart,
    grouped_bars,
    method_colours,
    quality_utility_scatter,
    synthetic_share_plot,
)
from acbench.report.formats import Grid, metric_grid, to_latex, to_markdown
from acbench.report.headline import headline_grid
from acbench.report.load import RANDOM_NOTE_SHORT, Run, load_run
from acbench.report.manifest import manifest_facts, weights_grid
from acbench.report.references import DATASET_NAMES, REFERENCES_DIR, compare, load_references
from acbench.report.samples import all_sample_grids
from acbench.report.significance import RunPredictions, attach_image_tests
from acbench.report.tables import MetricTable, attach_intervals, build_tables, table_frame

__all__ = ["render_report"]
log = logging.getLogger(__name__)


def render_report(run_dir: str | Path, formats: list[str] | None = None, bootstrap: int | None = None,
                  samples_per_type: int | None = None, references_dir: str | Path | None = REFERENCES_DIR,
                  sample_grids: bool | None = None) -> Path:
    """Render every table, figure and the HTML page of a run folder; returns report/index.html.

    `formats` adds per-table files (md, tex, csv; default: the protocol's report.formats);
    `bootstrap` > 0 adds 95% intervals from that many resamples of the detectors' predictions.csv
    (default: the protocol's report.bootstrap).
    """
    run = load_run(run_dir)
    config = run.manifest.get("protocol", {}).get("report", {})
    formats = formats if formats is not None else config.get("formats", ["md", "csv"])
    bootstrap = bootstrap if bootstrap is not None else config.get("bootstrap", 0)
    samples_per_type = samples_per_type or config.get("samples_per_type", 3)
    sample_grids = config.get("sample_grid", True) if sample_grids is None else sample_grids
    out = run.root / "report"
    for stale in ("tables", "figures", "samples"):  # a re-render must not keep files of removed results
        shutil.rmtree(out / stale, ignore_errors=True)

    tables = build_tables(run.frame)
    attach_image_tests(tables, RunPredictions(run.root, run.frame))  # marks of image AUROC / AP: per-image test
    if bootstrap > 0:
        intervals = bootstrap_intervals(run.root, run.frame, bootstrap)
        for table in tables:
            attach_intervals(table, intervals)
    _write_table_files(tables, out / "tables", formats)

    pdf = WRITE_PDF.set("tex" in formats or "pdf" in formats)  # PDF figures go with LaTeX tables
    try:
        blocks = _summary_blocks(run)
        blocks += _headline_blocks(tables, run, out, references_dir)
        blocks += _table_blocks(tables)
        blocks += _ablation_blocks(tables, run, out, formats)
        blocks += _reference_blocks(tables, run, references_dir)
        blocks += _correlation_blocks(run, out)
        blocks += _figure_blocks(tables, run, out)
        if sample_grids:
            blocks += _sample_blocks(run, out, samples_per_type)
    finally:
        WRITE_PDF.reset(pdf)

    atomic_write_text(out / "index.md", f"# {run.name}\n\n" + doc.to_md(blocks, out))
    index = out / "index.html"
    atomic_write_text(index, doc.to_page(blocks, f"acbench report — {run.name}"))
    return index


def _summary_blocks(run: Run) -> list[doc.Block]:
    blocks = []
    if run.random_parts:
        shown = ", ".join(run.random_parts[:8]) + (" …" if len(run.random_parts) > 8 else "")
        blocks.append(doc.banner(f"{RANDOM_NOTE_SHORT.upper()}: some networks ran on random weights "
                                 f"({shown}); their numbers only test the pipeline."))
    blocks += [doc.heading("Run"), doc.facts(manifest_facts(run))]
    weights = weights_grid(run)
    if weights is not None:
        blocks.append(doc.grid(weights))
    notes = caveats(run.frame)
    if notes:
        blocks += [doc.heading("Caveats"), doc.facts(notes)]
    return blocks


def _headline_blocks(tables: list[MetricTable], run: Run, out: Path,
                     references_dir: str | Path | None) -> list[doc.Block]:
    """The summary table (also tables/summary.{md,tex,csv}) and the quality-vs-utility figure, first."""
    dataset = DATASET_NAMES.get(run.manifest.get("protocol", {}).get("dataset", {}).get("kind", ""), "")
    refs = load_references(references_dir) if references_dir and Path(references_dir).is_dir() else []
    grid = headline_grid(tables, refs, dataset)
    if grid is None:
        return []
    atomic_write_text(out / "tables" / "summary.md", to_markdown(grid))
    atomic_write_text(out / "tables" / "summary.tex", to_latex(grid))
    summary = pd.DataFrame([[c.text for c in row] for row in grid.rows], columns=grid.header)
    atomic_write_text(out / "tables" / "summary.csv", summary.to_csv(index=False))
    blocks = [doc.heading("Summary"), doc.grid(grid)]
    colours = method_colours(list(dict.fromkeys(run.frame["label"]))) if not run.frame.empty else {}
    for stats in _scatter_pairs(correlations(run.frame))[:1]:
        quality, downstream = stats["quality_column"], stats["downstream"]
        title = (f"Spearman ρ {stats['spearman_rho']:+.2f}, Kendall τ {stats['kendall_tau']:+.2f} "
                 f"({int(stats['points'])} method × category points)")
        png = quality_utility_scatter(run.frame, quality, downstream, title, out / "figures" / "headline_scatter",
                                      bool(run.random_parts), colours)
        blocks.append(doc.figure(png, f"Does quality predict utility? {stats['quality']} against {downstream}, "
                                      "one point per method × category", wide=True))
    return blocks


def _table_blocks(tables: list[MetricTable]) -> list[doc.Block]:
    if not tables:
        return [doc.heading("Results"), doc.text("No results yet: results.csv is empty or missing.")]
    blocks = [doc.heading("Generation quality"), doc.fold("per-category tables")] \
        if any(not t.detector for t in tables) else []
    blocks += [doc.grid(metric_grid(t)) for t in tables if not t.detector]
    blocks += [doc.unfold()] if blocks else []
    detection = [t for t in tables if t.detector]
    if detection:
        blocks += [doc.heading("Downstream detection (real held-out anomalies)"), doc.fold("per-category tables")]
        blocks += [doc.grid(metric_grid(t)) for t in detection] + [doc.unfold()]
    return blocks


def _write_table_files(tables: list[MetricTable], folder: Path, formats: list[str]) -> None:
    for table in tables:
        grid = metric_grid(table)
        if "md" in formats:
            atomic_write_text(folder / f"{table.key}.md", to_markdown(grid))
        if "tex" in formats:
            atomic_write_text(folder / f"{table.key}.tex", to_latex(grid))
        if "csv" in formats:
            atomic_write_text(folder / f"{table.key}.csv", table_frame(table).to_csv(index=False))
    if tables and "csv" in formats:
        all_rows = pd.concat([table_frame(t) for t in tables], ignore_index=True)
        atomic_write_text(folder / "all_tables.csv", all_rows.to_csv(index=False))


def _ablation_blocks(tables: list[MetricTable], run: Run, out: Path, formats: list[str]) -> list[doc.Block]:
    grid = ablation_grid(tables, run.methods_config)
    if grid is None:
        return []
    atomic_write_text(out / "tables" / "ablation.md", to_markdown(grid))
    atomic_write_text(out / "tables" / "ablation.tex", to_latex(grid))
    frame = ablation_frame(grid)
    atomic_write_text(out / "tables" / "ablation.csv", frame.to_csv(index=False))
    chart = ablation_chart(frame, out / "figures" / "ablation")
    return [doc.heading("Ablation"), doc.grid(grid), doc.figure(chart, "ablation: mean over categories", wide=True)]


def _reference_blocks(tables: list[MetricTable], run: Run, references_dir: str | Path | None) -> list[doc.Block]:
    if references_dir is None or not Path(references_dir).is_dir():
        return []
    kind = run.manifest.get("protocol", {}).get("dataset", {}).get("kind", "")
    dataset = DATASET_NAMES.get(kind)
    if dataset is None:
        return []
    pairs = compare(tables, load_references(references_dir), dataset)
    if not pairs:
        return []
    blocks = [doc.heading("Published numbers beside measured ones"),
              doc.text("Paper values as printed (percent where the paper uses percent); "
                       "difference = acbench − paper. Sources and provenance: reports/references/.")]
    return blocks + [doc.grid(Grid.from_frame(title, frame)) for title, frame in pairs]


def _correlation_blocks(run: Run, out: Path) -> list[doc.Block]:
    table = correlations(run.frame)
    if table.empty:
        return []
    atomic_write_text(out / "tables" / "quality_vs_utility.csv", table.to_csv(index=False))
    grid = Grid.from_frame("Rank correlation across methods × categories", correlation_display(table),
                           ["signs oriented so that + means: better quality score, better detector"])
    atomic_write_text(out / "tables" / "quality_vs_utility.tex", to_latex(grid))
    return [doc.heading("Does quality predict utility?"), doc.grid(grid)]


def _scatter_pairs(correlation: pd.DataFrame) -> list[pd.Series]:
    """Up to two correlation rows to plot: IC-LPIPS and IS against pixel AP (or the first downstream)."""
    if correlation.empty:
        return []
    downstream = [d for d in correlation["downstream"].unique() if d.startswith("pixel_ap")] or \
        list(correlation["downstream"].unique())
    chosen = []
    for quality in ("ic_lpips_ad", "ic_lpips", "is"):
        hits = correlation[(correlation["quality_column"] == quality) & (correlation["downstream"] == downstream[0])]
        if not hits.empty:
            chosen.append(hits.iloc[0])
    return chosen[:2]


def _figure_blocks(tables: list[MetricTable], run: Run, out: Path) -> list[doc.Block]:
    blocks = []
    colours = method_colours(list(dict.fromkeys(run.frame["label"]))) if not run.frame.empty else {}
    for table in tables:
        values = table.mean.to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size and values.max() > values.min():  # a chart of equal bars says nothing
            png = grouped_bars(table, out / "figures" / f"bars_{table.key}", colours)
            seeds = table.count.to_numpy(dtype=float).max() > 1
            blocks.append(doc.figure(png, f"{table.title}: per category"
                                     + (", error bars = std over seeds" if seeds else " (one seed)"),
                                     wide=len(table.mean.index) > 7))
    random = bool(run.random_parts)
    for stats in _scatter_pairs(correlations(run.frame)):
        quality, downstream = stats["quality_column"], stats["downstream"]
        title = (f"Spearman ρ {stats['spearman_rho']:+.2f}, Kendall τ {stats['kendall_tau']:+.2f} "
                 f"({int(stats['points'])} method × category points)")
        png = quality_utility_scatter(run.frame, quality, downstream, title,
                                      out / "figures" / f"scatter_{quality}", random, colours)
        blocks.append(doc.figure(png, f"{stats['quality']} vs {downstream}, one point per method × category"))
    share = synthetic_share_plot(run.frame, out / "figures" / "synthetic_share", colours)
    if share is not None:
        blocks.append(doc.figure(share, "detection metrics (mean over categories and seeds) against the share of "
                                        "synthetic anomalies in training batches", wide=True))
    return ([doc.heading("Figures")] + blocks) if blocks else []


def _sample_blocks(run: Run, out: Path, per_type: int) -> list[doc.Block]:
    from acbench.report.manifest import dataset_root_of

    order = [f"{m['name']}/{m['variant']}" if m.get("variant") else m["name"] for m in run.methods_config]
    grids = all_sample_grids(run.root, out / "samples", per_type, dataset_root_of(run), order)
    if not grids:
        return []
    blocks = [doc.heading("Samples"),
              doc.text("Per category and defect type: one row per method, each sample as normal | generated | "
                       "mask overlay; methods share source images where their sets allow.")]
    return blocks + [doc.figure(path, f"{category} — {atype}", wide=True) for category, atype, path in grids]
