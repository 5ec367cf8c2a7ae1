"""The `acbench` command line: thin wrappers over the library, printed with rich.

Exit codes: 0 success, 1 internal failure or failed jobs, 2 user error (one line, no traceback).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from acbench import console_log, registry
from acbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluation and benchmarking suite for industrial anomaly synthesis.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: the embedded demo set, layout checks.")
app.add_typer(data_app, name="data")
weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights a protocol needs.")
app.add_typer(weights_app, name="weights")
evaluate_app = typer.Typer(no_args_is_help=True, help="Score or test one synthetic set outside a study.")
app.add_typer(evaluate_app, name="evaluate")
console = Console()
err = Console(stderr=True)

PROTOCOLS_DIR = Path(__file__).resolve().parent.parent / "protocols"


@app.command()
def run(
    protocol: Annotated[Path, typer.Argument(help="study protocol YAML")],
    out: Annotated[Path | None, typer.Option(help="run folder (default: the protocol's output)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 or auto")] = None,
    fail_fast: Annotated[bool, typer.Option(help="stop at the first failing job")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars, only the summary (for CI)")] = False,
    executor: Annotated[str | None, typer.Option(help="local, ray or slurm (default: the protocol's)")] = None,
) -> None:
    """Run a whole study: fit, generate, score, detect, report. Re-running resumes."""
    from acbench.engine.progress import NullProgress, RichProgress
    from acbench.engine.runner import run_study
    from acbench.protocol import load_protocol

    proto = load_protocol(protocol)
    if device:
        proto.executor.device = device
    if executor:
        if executor not in ("local", "ray", "slurm"):
            raise UserError(f"--executor: '{executor}' is unknown; use local, ray or slurm")
        proto.executor.kind = executor  # type: ignore[assignment]
    progress = NullProgress() if quiet else RichProgress(err)

    def announce(jobs):
        stages = {}
        for job in jobs:
            stages[job.stage] = stages.get(job.stage, 0) + 1
        err.print(f"[bold]{proto.name}[/bold]: {len(jobs)} jobs ("
                  + ", ".join(f"{n} {s}" for s, n in stages.items()) + f") on the {proto.executor.kind} executor")
        if not quiet:
            _announce_costs(proto, out)

    result = run_study(proto, out=out, source=str(protocol), fail_fast=fail_fast, progress=progress,
                       on_plan=announce)
    _print_summary(result)
    for line in console_log.repeated_summary():
        err.print(f"[dim]repeated warning: {escape(line)}[/dim]", highlight=False)
    if not result.ok:
        raise typer.Exit(result.exit_code)


def _announce_costs(proto, out) -> None:
    """The cost estimate as the first lines of a run (`acbench plan` shows the full picture)."""
    from acbench.engine.views import estimate_table

    try:
        from acbench.engine.overview import plan_study

        study = plan_study(proto, out)
    except UserError:  # the run itself reports input problems, with their one line
        return
    for w in study.weights:
        where = w.where or "; ".join(w.looked) or "no location given"
        err.print(f"weights {escape(w.name)} ({escape(', '.join(w.needed_by))}): {w.state} ({escape(where)})",
                  highlight=False, soft_wrap=True)
    err.print(estimate_table(study.stages))


def _print_summary(result) -> None:
    err.print(f"ran {len(result.ran)}, cached {len(result.skipped)}, failed {len(result.failed)}"
              + (f", not run {len(result.not_run)} (--fail-fast)" if result.not_run else "")
              + f" -> {result.root}")
    for job_id, reason in result.failed.items():
        err.print(f"[red]failed[/red] {escape(job_id)}: {escape(reason)}", highlight=False, soft_wrap=True)
    if result.user_errors:
        first = next(iter(result.user_errors.values()))
        err.print(f"[red]error:[/red] {escape(first)}", highlight=False, soft_wrap=True)
    console.print(f"report: {result.root / 'report' / 'index.html'}")


@app.command("plan")
def plan_(
    protocol: Annotated[Path, typer.Argument(help="study protocol YAML")],
    out: Annotated[Path | None, typer.Option(help="run folder (default: the protocol's output)")] = None,
    history: Annotated[list[Path] | None, typer.Option(help="earlier run folders to take timings from")] = None,
    jobs: Annotated[bool, typer.Option(help="list every job")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Before spending: the jobs, the weights they need (found or not), GPU-hours and peak memory."""
    import json

    from acbench.engine.overview import plan_study
    from acbench.engine.views import print_plan
    from acbench.protocol import load_protocol

    study = plan_study(load_protocol(protocol), out, history or [])
    if json_out:
        console.print_json(json.dumps(study.as_dict()))
    else:
        print_plan(console, study, jobs)


@weights_app.command("check")
def weights_check(protocol: Annotated[Path, typer.Argument(help="study protocol YAML")]) -> None:
    """Which pretrained weights a protocol needs and where each was found (never downloads)."""
    from acbench.engine.requirements import check_weights
    from acbench.engine.views import weights_table
    from acbench.protocol import load_protocol

    proto = load_protocol(protocol)
    weights = check_weights(proto)
    if not weights:
        console.print(f"{protocol}: needs no pretrained weights", soft_wrap=True)
        return
    console.print(weights_table(weights))
    missing = [w.name for w in weights if w.found is False]
    if missing and proto.weights == "pretrained":
        raise UserError(f"{protocol}: weights missing under policy 'pretrained': {', '.join(missing)}")


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="a run folder")]) -> None:
    """What is done, running, failed and pending in a run folder."""
    from acbench.engine.status import run_status
    from acbench.engine.views import print_status

    print_status(console, run_status(run_dir))


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder")],
    bootstrap: Annotated[int | None, typer.Option(
        help="resamples for 95% intervals of image metrics (0: none; default: the protocol's report.bootstrap)")]
    = None,
    formats: Annotated[str | None, typer.Option(help="table files, e.g. md,tex,csv (default: protocol's)")]
    = None,
) -> None:
    """Re-render the report of a run folder from its results (HTML, Markdown, LaTeX, CSV, figures)."""
    from acbench.report import render_report

    chosen = [f.strip() for f in formats.split(",") if f.strip()] if formats else None
    console.print(f"report: {render_report(run_dir, formats=chosen, bootstrap=bootstrap)}")


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="two or more run folders")],
    out: Annotated[Path, typer.Option(help="folder for the merged results and their report")],
) -> None:
    """One report and leaderboard from several runs with the same data and metric settings."""
    from acbench.report import render_report
    from acbench.report.leaderboard import merge_runs

    console.print(f"report: {render_report(merge_runs(run_dirs, out))}")


@app.command()
def verify(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    sample: Annotated[int, typer.Option(help="how many finished jobs to re-run (chosen with --seed)")] = 3,
    all_jobs: Annotated[bool, typer.Option("--all", help="re-run every finished job")] = False,
    seed: Annotated[int, typer.Option(help="seed of the job sample")] = 0,
    device: Annotated[str | None, typer.Option(help="device for the re-runs (default: the run's)")] = None,
) -> None:
    """Re-run jobs of a study from its manifest and report whether they reproduce bit for bit."""
    from acbench.engine.verify import verify_run

    verdicts = verify_run(run_dir, sample, all_jobs, device, seed)
    table = Table("job", "reproduced", "what differs", title=f"verify {run_dir}")
    for v in verdicts:
        table.add_row(v.job_id, "yes" if v.reproduced else "[red]NO[/red]", escape("; ".join(v.differences)))
    console.print(table)
    failed = [v for v in verdicts if not v.reproduced]
    console.print(f"{len(verdicts) - len(failed)} of {len(verdicts)} jobs reproduced bit for bit")
    if failed:
        raise typer.Exit(1)


@app.command()
def generate(
    method: Annotated[str, typer.Argument(help="method name (acbench list methods)")],
    dataset: Annotated[Path, typer.Option(help="dataset root in MVTec AD layout")],
    category: Annotated[str, typer.Option(help="category to generate for")],
    out: Annotated[Path, typer.Option(help="SyntheticSet folder to write")],
    per_type: Annotated[int, typer.Option(help="pairs per anomaly type")] = 16,
    options: Annotated[str, typer.Option(help="method options as YAML, e.g. '{mode: scar}'")] = "{}",
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "auto",
    weights: Annotated[str, typer.Option(help="pretrained, pretrained-or-random or random")] = "pretrained",
) -> None:
    """Fit a method on one category's synthesis split and write a SyntheticSet."""
    import yaml

    from acbench.data.mvtec import load_category, resolve_categories
    from acbench.engine.stages import resolve_device, seed_everything
    from acbench.protocol import SplitConfig, parse_protocol
    from acbench.synthesis import GenerationRequest, write_synthetic_set

    raw = {"name": "generate", "dataset": {"kind": "folder", "root": str(dataset), "categories": [category]},
           "methods": [{"name": method, "options": yaml.safe_load(options) or {}}], "weights": weights}
    proto = parse_protocol(raw, source="--options")
    resolve_categories(dataset, [category])
    data = load_category(dataset, category, SplitConfig())
    cls = registry.load("methods", method)
    synth = cls(cls.Options.model_validate(proto.methods[0].options), weights=weights)
    dev = resolve_device(device)
    seed_everything(seed)
    fit_dir = out / "_fit"
    if cls.fit_scope != "none":
        synth.fit([data], fit_dir, seed=seed, device=dev)

    def samples():
        for atype in sorted(data.synthesis):
            yield from synth.generate(data, GenerationRequest(atype, per_type, seed, fit_dir=fit_dir, device=dev))

    count = write_synthetic_set(out, samples(), category, method, seed)
    console.print(f"{count} pairs written to {out}")


@app.command("list")
def list_(kind: Annotated[str, typer.Argument(help="methods, detectors, metrics, masks or protocols")]) -> None:
    """List registered plugins or the shipped protocols."""
    if kind == "protocols":
        _list_protocols()
        return
    if kind not in registry.KINDS:
        raise UserError(f"unknown kind '{kind}'; use methods, detectors, metrics, masks or protocols")
    table = Table(kind)
    table.add_column("description")
    for name in registry.names(kind):  # type: ignore[arg-type]
        table.add_row(name, registry.describe(kind, name))  # type: ignore[arg-type]
    console.print(table)


@app.command()
def selftest(
    device: Annotated[str, typer.Option(help="cuda (full-size random networks) or cpu (tiny presets)")] = "cuda",
    only: Annotated[list[str] | None, typer.Option(help="only this plugin (repeatable)")] = None,
    audit: Annotated[bool, typer.Option(help="also fail a plugin that creates tensors on another device")] = True,
    compile_: Annotated[bool, typer.Option("--compile", help="methods keep `compile: auto` (compiled on CUDA; "
                                                             "about a minute more per diffusion method)")] = False,
) -> None:
    """Every registered method, metric and detector once on a small built-in study; one line each."""
    from acbench.selftest import quiet_logs, run_selftest

    def show(result) -> None:
        colour = "green" if result.ok else "red"
        console.print(f"[{colour}]{escape(result.line())}[/{colour}]", highlight=False, soft_wrap=True)

    with quiet_logs():
        results = run_selftest(device, audit=audit, only=set(only) if only else None, on_result=show,
                               compile_=compile_)
    failed = [r for r in results if not r.ok]
    console.print(f"{len(results) - len(failed)} ok, {len(failed)} failed on {device} "
                  f"in {sum(r.seconds for r in results):.0f}s")
    if failed:
        raise typer.Exit(1)


def _list_protocols() -> None:
    table = Table("protocol", "description")
    for path in sorted(PROTOCOLS_DIR.glob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        table.add_row(str(path.relative_to(PROTOCOLS_DIR.parent)), first)
    console.print(table)


@data_app.command("demo")
def data_demo(
    out: Annotated[Path, typer.Option(help="folder to write the demo dataset into")],
    seed: Annotated[int, typer.Option(help="seed of the drawn views and defects")] = 0,
) -> None:
    """Write the embedded demo dataset (MVTec AD layout)."""
    from acbench.data.demo import write_demo

    write_demo(out, seed)
    console.print(f"demo dataset written to {out}")


@data_app.command("check")
def data_check(
    root: Annotated[Path, typer.Argument(help="dataset folder as downloaded")],
    kind: Annotated[str, typer.Option(help="layout: auto, mvtec, visa, mpdd, btad, mtd, mvtec3d, realiad, "
                                           "mvtec_ad2")] = "auto",
    types: Annotated[str | None, typer.Option(help="VisA defect types: annotated or single")] = None,
    views: Annotated[str | None, typer.Option(help="Real-IAD views, comma-separated, e.g. C1,C2")] = None,
    resolution: Annotated[str | None, typer.Option(help="Real-IAD image folder: 256, 512, 1024 or raw")] = None,
    split_file: Annotated[str | None, typer.Option(help="split file under ROOT (VisA, Real-IAD)")] = None,
) -> None:
    """Validate a dataset folder in its released layout; one line per problem."""
    from acbench.data import check_layout
    from acbench.protocol import parse_dataset

    options = parse_dataset({"kind": kind, "root": str(root), "types": types, "resolution": resolution,
                             "split_file": split_file,
                             "views": [v.strip() for v in views.split(",") if v.strip()] if views else None},
                            source="data check")
    read_as, problems = check_layout(root, options.kind, options)
    if kind == "auto":
        console.print(f"{root}: recognised the {read_as} layout", highlight=False, soft_wrap=True)
    for problem in dict.fromkeys(problems):  # a missing split file is reported once, not per category
        console.print(problem, highlight=False, soft_wrap=True)
    if problems:
        err.print(f"{len(set(problems))} problem(s) in {root}")
        raise typer.Exit(2)
    console.print(f"{root}: OK")


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="folder of released pairs, e.g. generated_dataset")],
    out: Annotated[Path, typer.Argument(help="output folder: one SyntheticSet per category")],
    layout: Annotated[str, typer.Option(help="anomalydiffusion, seas, dfmgan or synthetic-set")] = "anomalydiffusion",
    category: Annotated[list[str] | None, typer.Option(help="only these categories (repeatable)")] = None,
    skip_bad: Annotated[bool, typer.Option(help="skip bad pairs with a warning instead of failing")] = False,
) -> None:
    """Convert released image+mask pairs once into SyntheticSets (use them with method 'released')."""
    from acbench_methods.released import import_released
    from acbench_methods.released.layouts import LAYOUTS

    if layout not in LAYOUTS:
        raise UserError(f"--layout: unknown layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    written = import_released(source, out, layout, category, on_bad="skip" if skip_bad else "error")
    for name, count in written.items():
        console.print(f"{name}: {count} pairs -> {out / name}")


@evaluate_app.command("quality")
def evaluate_quality(
    generated: Annotated[Path, typer.Option(help="SyntheticSet or image folder (flat or one sub-folder per type)")],
    reference: Annotated[Path, typer.Option(help="real anomalies, flat or one sub-folder per type")],
    metrics: Annotated[str, typer.Option(help="comma-separated metric names")] = "is,ic-lpips,fid,kid",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto")] = "cpu",
    weights: Annotated[str, typer.Option(help="pretrained, pretrained-or-random or random")] = "pretrained",
    json_out: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
) -> None:
    """Generation-quality metrics (IS, IC-LPIPS, FID, KID) per anomaly type and overall."""
    import json
    import math

    from acbench.engine.stages import resolve_device
    from acbench.metrics.evaluate import evaluate_quality as evaluate

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    rows = [v.row() for v in evaluate(generated, reference, names, resolve_device(device), weights)]
    if json_out:  # NaN (a type with no qualifying cluster) is not JSON: null
        rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
        print(json.dumps(rows, indent=1))
        return
    table = Table("metric", "type", "value", "variant", "weights", "n_generated", "n_reference")
    for r in rows:
        table.add_row(r["metric"], r["anomaly_type"] or "(all)", f"{r['value']:.4f}", r.get("variant_of_metric", ""),
                      r.get("weights", ""), str(r.get("n_generated", "")), str(r.get("n_reference", "")))
    console.print(table)


@evaluate_app.command("detection")
def evaluate_detection(
    dataset: Annotated[Path, typer.Option(help="dataset root in MVTec AD layout")],
    category: Annotated[str, typer.Option(help="category folder inside the dataset")],
    detector: Annotated[str, typer.Option(help="detector name (acbench list detectors)")],
    synthetic: Annotated[Path | None, typer.Option(help="SyntheticSet folder (index.csv)")] = None,
    preset: Annotated[str, typer.Option(help="tiny (CPU minutes) or paper (literature schedule)")] = "tiny",
    option: Annotated[list[str] | None, typer.Option(help="detector option KEY=VALUE, repeatable")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    weights: Annotated[str, typer.Option(help="pretrained, pretrained-or-random or random")] = "pretrained",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto")] = "auto",
    out: Annotated[Path | None, typer.Option(help="folder for predictions.csv and anomaly maps")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the result rows as JSON")] = False,
) -> None:
    """Train a detector on normal images + a synthetic set, evaluate it on the held-out real anomalies."""
    from acbench.detectors.evaluate import evaluate_detection as run_evaluation
    from acbench.detectors.evaluate import parse_options

    rows = run_evaluation(dataset, category, detector, synthetic, preset, parse_options(option or []), seed,
                          weights, device, out)
    if json_:
        import json

        console.print_json(json.dumps(rows))
        return
    table = Table("metric", "scope", "value", title=f"{detector} on {category} ({rows[0]['workdir']})")
    for row in rows:
        table.add_row(row["metric"], row["scope"], f"{row['value']:.4f}")
    console.print(table)


def main() -> None:
    """Console entry point: user errors become one line and exit code 2."""
    before = list(logging.getLogger().handlers)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the console shows warnings; run logs get everything
        handler.setLevel(logging.WARNING)
    # each distinct warning once on the console (the handler made here, not one an embedding program owns)
    console_log.install([h for h in logging.getLogger().handlers if h not in before])
    try:
        app()
    except UserError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
