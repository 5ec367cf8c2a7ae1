"""Progress display: one bar over jobs (done/total, ETA) and one per running job.

The local executor runs one job at a time and reports its steps through `inner`; the Ray and SLURM
executors run several at once and report each job's steps through `job_progress` (read from the
progress file its worker writes).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from acbench.engine.plan import Job


class NullProgress:
    """Progress that shows nothing (tests, --quiet)."""

    def start(self, jobs: list[Job]) -> None: ...
    def job_start(self, job: Job) -> None: ...
    def job_done(self, job: Job, status: str) -> None: ...
    def inner(self, done: int, total: int) -> None: ...
    def job_progress(self, job: Job, done: int, total: int) -> None: ...
    def stop(self) -> None: ...


class RichProgress(NullProgress):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=self.console, transient=False)
        self.jobs_task = None
        self.running: dict[str, int] = {}  # job id -> its bar
        self.current: Job | None = None  # the job `inner` reports on (the local executor's)

    def start(self, jobs: list[Job]) -> None:
        self.bar.start()
        self.jobs_task = self.bar.add_task("jobs", total=len(jobs))

    def job_start(self, job: Job) -> None:
        self.running[job.id] = self.bar.add_task(f"  {job.id}", total=1)
        self.current = job

    def job_done(self, job: Job, status: str) -> None:
        if status in ("failed", "blocked"):
            self.console.print(f"[red]{status}[/red] {job.id}")
        self.bar.advance(self.jobs_task)
        task = self.running.pop(job.id, None)
        if task is not None:
            self.bar.remove_task(task)

    def inner(self, done: int, total: int) -> None:
        if self.current is not None:
            self.job_progress(self.current, done, total)

    def job_progress(self, job: Job, done: int, total: int) -> None:
        task = self.running.get(job.id)
        if task is not None:
            self.bar.update(task, completed=done, total=max(total, 1))

    def stop(self) -> None:
        self.bar.update(self.jobs_task, description="jobs")
        self.bar.stop()
