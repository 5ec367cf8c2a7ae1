"""Executors: who runs the jobs of a plan. Local (default, in this process), Ray, SLURM (submitit).

Every executor runs jobs through `worker.run_job`, so each job writes its artifact into the run
store with the same atomic rename + marker rules wherever it runs, and the run store alone decides
what is done. Fan-out is left to the backend (Ray's scheduler, SLURM's queue); `DependencyScheduler`
only holds a job back until the jobs it depends on are finished.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from acbench.engine.plan import Job
from acbench.engine.store import RunStore
from acbench.engine.worker import JobOutcome, job_progress_path, read_job_progress, run_job
from acbench.errors import UserError
from acbench.protocol import Protocol

FINISHED_OK = ("done", "cached")
FINISHED_BAD = ("failed", "blocked")


class LocalExecutor:
    """Runs jobs one after another in this process, in plan order (dependencies first)."""

    def __init__(self, device: str) -> None:
        self.device = device

    def run(self, protocol: Protocol, store: RunStore, jobs: list[Job], result: Any, fail_fast: bool,
            progress: Any) -> None:
        protocol_json = protocol.model_dump_json()
        state: dict[str, str] = {}
        for job in jobs:
            if result.stopped:
                result.not_run.append(job.id)
                continue
            if store.is_done(job):
                state[job.id] = "cached"
                result.record(job, JobOutcome(job.id, "cached"))
                progress.job_done(job, "cached")
                continue
            broken = [d for d in job.deps if state.get(d) in FINISHED_BAD]
            if broken:
                state[job.id] = "blocked"
                result.block(job, broken[0])
                progress.job_done(job, "blocked")
                continue
            progress.job_start(job)
            outcome = run_job(protocol_json, str(store.root), job, self.device, progress.inner)
            state[job.id] = outcome.status
            result.record(job, outcome)
            progress.job_done(job, outcome.status)
            if outcome.status == "failed" and fail_fast:
                result.stopped = True


class DependencyScheduler(ABC):
    """Submits each job to a backend as soon as its dependencies are finished, until all are.

    Subclasses say how to submit a job, wait for some to finish, and read an outcome.
    """

    poll_seconds = 0.5

    @abstractmethod
    def open(self, protocol: Protocol, store: RunStore) -> None: ...

    @abstractmethod
    def submit(self, job: Job) -> Any: ...

    @abstractmethod
    def wait(self, handles: list[Any]) -> list[Any]:
        """Block until at least one handle is finished, or about `poll_seconds` have passed (so the
        running jobs' progress can be shown); return the finished ones (possibly none)."""

    @abstractmethod
    def outcome(self, handle: Any, job: Job) -> JobOutcome: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backend (a Ray instance started here)."""

    def run(self, protocol: Protocol, store: RunStore, jobs: list[Job], result: Any, fail_fast: bool,
            progress: Any) -> None:
        self.open(protocol, store)
        try:
            self._drive(store, jobs, result, fail_fast, progress)
        finally:
            self.close()

    def _drive(self, store: RunStore, jobs: list[Job], result: Any, fail_fast: bool, progress: Any) -> None:
        state: dict[str, str] = {}
        waiting: list[Job] = []
        for job in jobs:
            if store.is_done(job):
                state[job.id] = "cached"
                result.record(job, JobOutcome(job.id, "cached"))
                progress.job_done(job, "cached")
            else:
                waiting.append(job)
        running: dict[Any, Job] = {}
        shown: dict[str, tuple[int, int]] = {}  # the within-job progress last shown, per running job
        while waiting or running:
            waiting = self._submit_ready(store, waiting, state, running, result, progress)
            if not running:
                break
            finished = self.wait(list(running))
            for job in running.values():
                self._show_progress(store, job, shown, progress)
            for handle in finished:
                job = running.pop(handle)
                outcome = self.outcome(handle, job)
                state[job.id] = outcome.status
                result.record(job, outcome)
                shown.pop(job.id, None)
                job_progress_path(store, job.id).unlink(missing_ok=True)
                progress.job_done(job, outcome.status)
                if outcome.status == "failed" and fail_fast:
                    result.stopped = True  # let the running jobs finish; submit nothing new
        result.not_run.extend(job.id for job in waiting)

    @staticmethod
    def _show_progress(store: RunStore, job: Job, shown: dict[str, tuple[int, int]], progress: Any) -> None:
        """Pass on what the job's worker last wrote to its progress file (`worker.ProgressFile`)."""
        step = read_job_progress(store, job.id)
        if step is not None and step != shown.get(job.id):
            shown[job.id] = step
            progress.job_progress(job, *step)

    def _submit_ready(self, store: RunStore, waiting: list[Job], state: dict[str, str], running: dict[Any, Job],
                      result: Any, progress: Any) -> list[Job]:
        still: list[Job] = []
        for job in waiting:  # plan order: a job's dependencies come before it
            deps = [state.get(d) for d in job.deps]
            broken = [d for d in job.deps if state.get(d) in FINISHED_BAD]
            if broken:
                state[job.id] = "blocked"
                result.block(job, broken[0])
                progress.job_done(job, "blocked")
            elif not result.stopped and all(s in FINISHED_OK for s in deps):
                job_progress_path(store, job.id).unlink(missing_ok=True)  # a killed run's last step
                running[self.submit(job)] = job
                progress.job_start(job)
            else:
                still.append(job)
        return still


def make_executor(protocol: Protocol, device: str):
    """The executor a protocol asks for (`executor.kind`); every job runs on `device` (`study_device`)."""
    cfg = protocol.executor
    if cfg.kind == "local" and cfg.workers > 1:
        from acbench.engine.pool_executor import PoolExecutor

        return PoolExecutor(device, cfg.workers)
    if cfg.kind == "local":
        return LocalExecutor(device)
    if cfg.kind == "ray":
        from acbench.engine.ray_executor import RayExecutor

        return RayExecutor(cfg, device)
    if cfg.kind == "slurm":
        from acbench.engine.slurm_executor import SlurmExecutor

        return SlurmExecutor(cfg, device)
    raise UserError(f"executor.kind: '{cfg.kind}' is unknown; use local, ray or slurm")
