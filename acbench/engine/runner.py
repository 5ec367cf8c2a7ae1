"""`run_study`: the one entry point that the CLI wraps (plan, execute, collect, report)."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from acbench import __version__
from acbench.data.io import atomic_write
from acbench.engine.plan import Job, plan
from acbench.engine.stages import execute_job, resolve_device, study_categories
from acbench.engine.store import RunStore
from acbench.errors import UserError
from acbench.protocol import Protocol

log = logging.getLogger("acbench")


@dataclass
class StudyResult:
    root: Path
    jobs: list[Job]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # job id -> one-line reason
    results: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


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
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_info(device: str) -> dict[str, str]:
    info = {"device": device, "platform": platform.platform()}
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _add_file_log(store: RunStore) -> logging.Handler:
    handler = logging.FileHandler(store.logs / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    return handler


class LocalExecutor:
    """Runs jobs one after another in this process, in plan order (dependencies first)."""

    def __init__(self, device: str) -> None:
        self.device = device

    def run(self, protocol: Protocol, store: RunStore, jobs: list[Job], result: StudyResult,
            fail_fast: bool, progress) -> None:
        failed: set[str] = set()
        for job in jobs:
            if store.is_done(job):
                result.skipped.append(job.id)
                progress.job_done(job, "cached")
                continue
            broken = [d for d in job.deps if d in failed]
            if broken:
                failed.add(job.id)
                result.failed[job.id] = f"dependency {broken[0]} failed"
                progress.job_done(job, "blocked")
                continue
            progress.job_start(job)
            start = time.time()
            try:
                execute_job(protocol, store, job, self.device, progress.inner)
            except Exception as exc:  # a failing job is recorded; the others continue
                failed.add(job.id)
                result.failed[job.id] = _record_failure(store, job, exc)
                progress.job_done(job, "failed")
                if fail_fast or isinstance(exc, KeyboardInterrupt):
                    raise
                continue
            log.info("job %s done in %.1fs", job.id, time.time() - start)
            result.ran.append(job.id)
            progress.job_done(job, "done")


def _record_failure(store: RunStore, job: Job, exc: BaseException) -> str:
    log_path = store.logs / (job.id.replace("/", "__") + ".err")
    log_path.write_text("".join(traceback.format_exception(exc)))
    reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    log.error("job %s failed: %s (traceback in %s)", job.id, reason, log_path)
    return f"{reason} (see {log_path})"


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
        "jobs": len(jobs), "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "command": " ".join(sys.argv),
    }


def make_executor(protocol: Protocol, device: str):
    kind = protocol.executor.kind
    if kind == "local":
        return LocalExecutor(device)
    raise UserError(f"executor.kind: '{kind}' is not available in this installation; use 'local'")


def run_study(protocol: Protocol, out: str | Path | None = None, source: str | None = None,
              fail_fast: bool = False, progress=None, report: bool = True,
              on_plan: Callable[[list[Job]], None] | None = None) -> StudyResult:
    """Plan and run a whole study; resumable (finished jobs with matching hashes are skipped)."""
    from acbench.engine.progress import NullProgress

    progress = progress or NullProgress()
    store = RunStore(out or protocol.output_dir())
    store.lock()
    handler = _add_file_log(store)
    try:
        started = time.time()
        device = resolve_device(protocol.executor.device)
        categories = study_categories(protocol)
        jobs = plan(protocol, categories)
        if on_plan:
            on_plan(jobs)
        store.clean_temporaries()
        manifest = _manifest(protocol, source, device, jobs, categories, started)
        store.write_json("manifest.json", manifest)
        result = StudyResult(store.root, jobs)
        progress.start(jobs)
        try:
            make_executor(protocol, device).run(protocol, store, jobs, result, fail_fast, progress)
        finally:
            progress.stop()
        result.results = collect_results(store, jobs)
        manifest.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=round(time.time() - started, 1),
                        failed_jobs=sorted(result.failed))
        store.write_json("manifest.json", manifest)
        if report:
            from acbench.report import render_report

            render_report(store.root)
        return result
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        store.unlock()
