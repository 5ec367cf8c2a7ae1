"""The `acbench` command line: thin wrappers over the library, printed with rich.

Exit codes: 0 success, 1 internal failure or failed jobs, 2 user error (one line, no traceback).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from acbench import registry
from acbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluation and benchmarking suite for industrial anomaly synthesis.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: the embedded demo set, layout checks.")
app.add_typer(data_app, name="data")
evaluate_app = typer.Typer(no_args_is_help=True, help="Evaluate one synthetic set without a study.")
app.add_typer(evaluate_app, name="evaluate")
console = Console()
err = Console(stderr=True)

PROTOCOLS_DIR = Path(__file__).resolve().parent.parent / "protocols"


@app.command()
def run(
    protocol: Annotated[Path, typer.Argument(help="study protocol YAML")],
    out: Annotated[Optional[Path], typer.Option(help="run folder (default: the protocol's output)")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 or auto")] = None,
    fail_fast: Annotated[bool, typer.Option(help="stop at the first failing job")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Run a whole study: fit, generate, score, detect, report. Re-running resumes."""
    from acbench.engine.progress import NullProgress, RichProgress
    from acbench.engine.runner import run_study
    from acbench.protocol import load_protocol

    proto = load_protocol(protocol)
    if device:
        proto.executor.device = device
    progress = NullProgress() if quiet else RichProgress(err)

    def announce(jobs):
        stages = {}
        for job in jobs:
            stages[job.stage] = stages.get(job.stage, 0) + 1
        err.print(f"[bold]{proto.name}[/bold]: {len(jobs)} jobs ("
                  + ", ".join(f"{n} {s}" for s, n in stages.items()) + ")")

    result = run_study(proto, out=out, source=str(protocol), fail_fast=fail_fast, progress=progress,
                       on_plan=announce)
    err.print(f"ran {len(result.ran)}, cached {len(result.skipped)}, failed {len(result.failed)} "
              f"-> {result.root}")
    for job_id, reason in result.failed.items():
        err.print(f"[red]failed[/red] {job_id}: {reason}")
    console.print(f"report: {result.root / 'report' / 'index.md'}")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder")]) -> None:
    """Re-render the report of a run folder from its results."""
    from acbench.report import render_report

    console.print(f"report: {render_report(run_dir)}")


@app.command("list")
def list_(kind: Annotated[str, typer.Argument(help="methods, detectors, metrics or protocols")]) -> None:
    """List registered plugins or the shipped protocols."""
    if kind == "protocols":
        _list_protocols()
        return
    if kind not in registry.KINDS:
        raise UserError(f"unknown kind '{kind}'; use methods, detectors, metrics or protocols")
    table = Table(kind)
    table.add_column("description")
    for name in registry.names(kind):  # type: ignore[arg-type]
        table.add_row(name, getattr(registry.load(kind, name), "description", ""))  # type: ignore[arg-type]
    console.print(table)


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
def data_check(root: Annotated[Path, typer.Argument(help="dataset root in MVTec AD layout")]) -> None:
    """Validate a dataset folder; one line per problem."""
    from acbench.data import check_dataset

    problems = check_dataset(root)
    for problem in problems:
        console.print(problem, highlight=False, soft_wrap=True)
    if problems:
        err.print(f"{len(problems)} problem(s) in {root}")
        raise typer.Exit(2)
    console.print(f"{root}: OK")


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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except UserError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
