"""Rich tables for `acbench plan`, `acbench weights check` and `acbench status`."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from acbench.engine.costs import StageEstimate
from acbench.engine.overview import StudyPlan
from acbench.engine.requirements import WeightStatus
from acbench.engine.status import RunStatus

STATE_STYLE = {"done": "green", "running": "cyan", "failed": "red", "pending": "white",
               "found": "green", "missing": "red", "missing (downloadable)": "yellow", "unknown": "yellow"}


def _hours(value: float) -> str:
    return "0" if value == 0 else ("<0.01" if value < 0.01 else f"{value:.2f}")


def estimate_table(stages: list[StageEstimate]) -> Table:
    table = Table("stage", "jobs", "to run", "GPU-hours", "CPU-hours", "peak GPU GB", "basis",
                  title="cost estimate (jobs still to run)")
    for s in stages:
        table.add_row(s.stage, str(s.jobs), str(s.pending), _hours(s.gpu_hours), _hours(s.cpu_hours),
                      f"{s.peak_gb:.1f}", ", ".join(sorted(s.sources or [])))
    table.add_row("total", str(sum(s.jobs for s in stages)), str(sum(s.pending for s in stages)),
                  _hours(sum(s.gpu_hours for s in stages)), _hours(sum(s.cpu_hours for s in stages)),
                  f"{max((s.peak_gb for s in stages), default=0):.1f}", "", style="bold")
    return table


def basis_lines(stages: list[StageEstimate]) -> list[str]:
    """Per stage, which cost keys are priced from measurements and which are estimates; then the total."""
    from acbench.engine.costs import FIGURES

    guess = FIGURES["fit"].source
    lines = []
    for s in stages:
        measured = sorted(k for k, src in s.keys.items() if src != guess)
        estimated = sorted(k for k, src in s.keys.items() if src == guess)
        parts = [f"measured: {', '.join(f'{k} ({s.keys[k]})' for k in measured)}"] if measured else []
        parts += [f"estimated (preset figure): {', '.join(estimated)}"] if estimated else []
        lines.append(f"{s.stage}: " + "; ".join(parts))
    total = sum(s.gpu_hours for s in stages)
    part = sum(s.measured_gpu_hours for s in stages)
    lines.append(f"total GPU-hours: {_hours(total)} on one GPU: {_hours(part)} priced from measurements (devices "
                 f"above), {_hours(total - part)} from preset figures (rough, one A100-class GPU)")
    return lines


def weights_table(weights: list[WeightStatus]) -> Table:
    table = Table("weight", "needed by", "state", "where / looked in", title="weights")
    for w in weights:
        style = STATE_STYLE.get(w.state, "white")
        table.add_row(w.name, ", ".join(w.needed_by), f"[{style}]{w.state}[/{style}]",
                      w.where or "; ".join(w.looked) or "(plugin gives no location)")
    return table


def print_plan(console: Console, study: StudyPlan, show_jobs: bool) -> None:
    if show_jobs:
        table = Table("job", "after", "state", title=f"{len(study.jobs)} jobs")
        for job in study.jobs:
            state = "done" if job.id in study.done else "pending"
            table.add_row(escape(job.id), escape(", ".join(job.deps)), f"[{STATE_STYLE[state]}]{state}[/]")
        console.print(table)
    if study.weights:
        console.print(weights_table(study.weights))
    else:
        console.print("weights: none needed")
    console.print(estimate_table(study.stages))
    for line in basis_lines(study.stages):
        console.print(line, highlight=False, soft_wrap=True)
    if study.history:
        console.print(f"timings from earlier runs: {', '.join(str(p) for p in study.history)}")


def print_status(console: Console, status: RunStatus) -> None:
    live = "[cyan]a run is in progress[/cyan]" if status.live else "no run in progress"
    counts = status.counts()
    console.print(f"{status.root}: {live}; " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for state in ("running", "failed", "pending"):
        for job_id in status.jobs[state]:
            why = f"  {status.errors[job_id]}" if job_id in status.errors else ""
            console.print(f"[{STATE_STYLE[state]}]{state:8}[/] {escape(job_id)}{escape(why)}", highlight=False)
