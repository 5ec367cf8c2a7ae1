"""Progress display: one bar over jobs (done/total, ETA, current job) and one inside the running job."""

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
    def stop(self) -> None: ...


class RichProgress(NullProgress):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=self.console, transient=False)
        self.jobs_task = None
        self.inner_task = None

    def start(self, jobs: list[Job]) -> None:
        self.bar.start()
        self.jobs_task = self.bar.add_task("jobs", total=len(jobs))
        self.inner_task = self.bar.add_task("  -", total=1, visible=False)

    def job_start(self, job: Job) -> None:
        self.bar.update(self.jobs_task, description=f"jobs  [cyan]{job.id}")
        self.bar.reset(self.inner_task, total=1, description=f"  {job.stage}", visible=True)

    def job_done(self, job: Job, status: str) -> None:
        if status in ("failed", "blocked"):
            self.console.print(f"[red]{status}[/red] {job.id}")
        self.bar.advance(self.jobs_task)
        self.bar.update(self.inner_task, visible=False)

    def inner(self, done: int, total: int) -> None:
        self.bar.update(self.inner_task, completed=done, total=max(total, 1))

    def stop(self) -> None:
        self.bar.update(self.jobs_task, description="jobs")
        self.bar.stop()
