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
from rich.table import Table

from acbench import registry
from acbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluation and benchmarking suite for industrial anomaly synthesis.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: the embedded demo set, layout checks.")
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)

PROTOCOLS_DIR = Path(__file__).resolve().parent.parent / "protocols"


@app.command()
def run(
    protocol: Annotated[Path, typer.Argument(help="study protocol YAML")],
    out: Annotated[Path | None, typer.Option(help="run folder (default: the protocol's output)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 or auto")] = None,
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


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="folder of released pairs, e.g. generated_dataset")],
    out: Annotated[Path, typer.Argument(help="output folder: one SyntheticSet per category")],
    layout: Annotated[str, typer.Option(help="folder layout: anomalydiffusion or synthetic-set")] = "anomalydiffusion",
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
