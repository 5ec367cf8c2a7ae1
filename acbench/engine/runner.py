"""`run_study`: the one entry point that the CLI wraps (plan, execute, collect, report)."""

from __future__ import annotations

import errno
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from acbench import __version__
from acbench.data.io import atomic_write
from acbench.engine.executors import make_executor
from acbench.engine.plan import Job, plan
from acbench.engine.preflight import preflight
from acbench.engine.stages import study_categories, study_device
from acbench.engine.store import RunStore
from acbench.engine.worker import (
    JobOutcome,
    attach_file_log,
    detach_file_log,
    disk_full_error,
    job_log_path,
    job_threads,
)
from acbench.protocol import Protocol

log = logging.getLogger("acbench")


@dataclass
class StudyResult:
    root: Path
    jobs: list[Job]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # job id -> one-line reason
    user_errors: dict[str, str] = field(default_factory=dict)  # failed because of the user's input
    blocked: dict[str, str] = field(default_factory=dict)  # job id -> the failed job it needed
    not_run: list[str] = field(default_factory=list)  # left after --fail-fast stopped the study
    stopped: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    results: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_run

    @property
    def exit_code(self) -> int:
        """0: all done; 2: only the user's input is at fault (fix it and re-run); 1: a job broke."""
        if self.ok:
            return 0
        own_failures = set(self.failed) - set(self.blocked)
        return 2 if own_failures and own_failures <= set(self.user_errors) else 1

    def record(self, job: Job, outcome: JobOutcome) -> None:
        if outcome.status == "cached":
            self.skipped.append(job.id)
        elif outcome.status == "done":
            self.ran.append(job.id)
            self.seconds[job.id] = outcome.seconds
        else:
            self.failed[job.id] = f"{outcome.error} (see {job_log_path(RunStore(self.root), job.id)})"
            if outcome.user_error:
                self.user_errors[job.id] = outcome.error

    def block(self, job: Job, dependency: str) -> None:
        self.blocked[job.id] = dependency
        self.failed[job.id] = f"not run: dependency {dependency} failed"


def package_versions() -> dict[str, str]:
    out = {"acbench": __version__, "python": platform.python_version()}
    for pkg in ("torch", "torchvision", "diffusers", "transformers", "anomalib", "torchmetrics", "lpips",
                "torch-fidelity", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=False,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_info(device: str) -> dict[str, str]:
    info = {"device": device, "platform": platform.platform()}
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():  # a Ray or SLURM driver may have no GPU itself
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def collect_results(store: RunStore, jobs: list[Job]) -> pd.DataFrame:
    """All rows of all finished jobs, long format, written atomically to results.csv."""
    rows = [row for job in jobs if store.is_done(job) for row in store.rows(job)]
    frame = pd.DataFrame(rows)
    atomic_write(store.root / "results.csv", lambda tmp: frame.to_csv(tmp, index=False))
    return frame


def _manifest(protocol: Protocol, source: str | None, device: str, jobs: list[Job], categories: list[str],
              started: float) -> dict:
    return {
        "protocol": protocol.model_dump(mode="json"), "protocol_file": source,
        "protocol_hash": protocol.hash(), "versions": package_versions(), "git_commit": git_commit(),
        **_device_info(device), "seeds": protocol.seeds, "categories": categories,
        "split": protocol.dataset.split.model_dump(), "weights_policy": protocol.weights,
        "jobs": len(jobs), "plan": [{"id": j.id, "stage": j.stage, "hash": j.hash, "deps": list(j.deps)}
                                    for j in jobs],
        "executor": protocol.executor.model_dump(mode="json"), "threads_per_job": job_threads(protocol),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "command": " ".join(sys.argv),
    }


def run_study(protocol: Protocol, out: str | Path | None = None, source: str | None = None,
              fail_fast: bool = False, progress=None, report: bool = True,
              on_plan: Callable[[list[Job]], None] | None = None) -> StudyResult:
    """Plan and run a whole study; resumable (finished jobs with matching hashes are skipped)."""
    store = RunStore(out or protocol.output_dir())
    store.lock()
    handler = attach_file_log(store.logs / "run.log")  # everything to the file; console keeps warnings
    try:
        return _run_locked(protocol, store, source, fail_fast, progress, report, on_plan)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # finished artifacts stay valid; temporaries are gone next run
            raise disk_full_error(exc, store.root) from None
        raise
    finally:
        detach_file_log(handler)
        store.unlock()


def _run_locked(protocol: Protocol, store: RunStore, source: str | None, fail_fast: bool, progress,
                report: bool, on_plan: Callable[[list[Job]], None] | None) -> StudyResult:
    from acbench.engine.progress import NullProgress

    progress = progress or NullProgress()
    started = time.time()
    device = study_device(protocol)
    categories = study_categories(protocol)
    jobs = plan(protocol, categories, device)
    preflight(protocol, categories)
    executor = make_executor(protocol, device)  # a missing optional backend is reported before any work
    if on_plan:
        on_plan(jobs)
    store.clean_temporaries()
    manifest = _manifest(protocol, source, device, jobs, categories, started)
    store.write_json("manifest.json", manifest)
    result = StudyResult(store.root, jobs)
    progress.start(jobs)
    try:
        executor.run(protocol, store, jobs, result, fail_fast, progress)
    finally:
        progress.stop()
    result.results = collect_results(store, jobs)
    manifest.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=round(time.time() - started, 1),
                    failed_jobs=sorted(result.failed))
    store.write_json("manifest.json", manifest)
    if report:
        from acbench.report import render_report

        render_report(store.root)
        if protocol.report.trackers:
            from acbench.report.trackers import log_run

            for tracker, where in log_run(store.root, protocol.report.trackers).items():
                log.info("logged to %s: %s", tracker, where)
    return result
