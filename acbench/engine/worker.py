"""Running one job wherever an executor puts it: this process, a Ray worker, a SLURM node.

`run_job` takes only plain data (the protocol as JSON, the run folder, the job), writes a plain log
file per job (`logs/<job>.log`), records a failure's traceback (`logs/<job>.err`) and returns a
`JobOutcome` instead of raising, so one failing job never stops the others.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from acbench.data.io import atomic_write_text
from acbench.engine.plan import Job
from acbench.engine.store import RunStore
from acbench.errors import UserError

log = logging.getLogger("acbench")

JOB_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class JobOutcome:
    job_id: str
    status: str  # done | cached | failed
    seconds: float = 0.0
    error: str = ""  # one line
    user_error: bool = False  # the user's input is at fault (exit code 2), not the code


def log_name(job_id: str) -> str:
    return job_id.replace("/", "__")


def job_log_path(store: RunStore, job_id: str) -> Path:
    return store.logs / f"{log_name(job_id)}.log"


def job_error_path(store: RunStore, job_id: str) -> Path:
    return store.logs / f"{log_name(job_id)}.err"


def job_progress_path(store: RunStore, job_id: str) -> Path:
    return store.logs / f"{log_name(job_id)}.progress"


class ProgressFile:
    """Within-job progress of a job that runs in another process (a Ray worker, a SLURM node): the
    worker writes "done total" to `logs/<job>.progress` (atomically, at most every `every` seconds,
    and always the last step); the driver reads it while it waits (`read_job_progress`)."""

    def __init__(self, path: Path, every: float = 0.5) -> None:
        self.path, self.every, self.last = path, every, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        try:
            atomic_write_text(self.path, f"{done} {total}\n")
        except OSError:  # progress is a display: never fail a job for it
            pass


def read_job_progress(store: RunStore, job_id: str) -> tuple[int, int] | None:
    try:
        done, total = job_progress_path(store, job_id).read_text().split()
        return int(done), int(total)
    except (OSError, ValueError):
        return None


def disk_full_error(exc: OSError, where: Path) -> UserError:
    return UserError(f"disk full while writing under {where} ({exc.strerror or exc}); free space and re-run "
                     "(finished jobs are kept)")


def run_job(protocol_json: str, root: str, job: Job, device: str = "auto",
            progress: Callable[[int, int], None] | None = None) -> JobOutcome:
    """Run `job` unless it is already done; never raises for a job's own failure."""
    from acbench.engine.stages import execute_job, resolve_device
    from acbench.protocol import Protocol

    store = RunStore(root)
    if store.is_done(job):
        return JobOutcome(job.id, "cached")
    protocol = Protocol.model_validate_json(protocol_json)
    error_file = job_error_path(store, job.id)
    error_file.unlink(missing_ok=True)  # a retried job starts with a clean record
    handler = attach_file_log(job_log_path(store, job.id))
    if progress is None:  # run by a Ray or SLURM executor: the driver reads the progress from a file
        progress = ProgressFile(job_progress_path(store, job.id))
    started = time.time()
    previous_threads = set_job_threads(job_threads(protocol))
    try:
        device = resolve_device(device)
        _check_device(device)
        log.info("job %s started on %s with %d threads", job.id, device, job_threads(protocol))
        execute_job(protocol, store, job, device, progress)
        seconds = time.time() - started
        log.info("job %s done in %.1fs", job.id, seconds)
        return JobOutcome(job.id, "done", seconds)
    except Exception as exc:  # recorded; the executor carries on with the other jobs
        return _failure(store, job, exc, time.time() - started)
    finally:
        set_job_threads(previous_threads)
        detach_file_log(handler)


def job_threads(protocol) -> int:
    """The CPU threads every job computes with, wherever it runs: `executor.cpus_per_job` (default 1).

    The thread count changes floating-point reduction order, so a Ray worker (which Ray starts with
    one thread) and this process (all cores) would otherwise train different detectors.
    """
    return max(1, int(protocol.executor.cpus_per_job))


def set_job_threads(threads: int) -> int:
    """Set torch's intra-op thread count; returns the previous one (restored after the job)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return previous


def _check_device(device: str) -> None:
    """A job planned on a GPU never falls back to the CPU of a worker that sees none."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"the study runs on '{device}' but this worker sees no GPU (CUDA_VISIBLE_DEVICES="
                            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r}); give the jobs GPUs "
                            "(executor.gpus_per_job) or set executor.device: cpu")


def _failure(store: RunStore, job: Job, exc: Exception, seconds: float) -> JobOutcome:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        exc = disk_full_error(exc, store.path(job).parent)
    reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    text = "".join(traceback.format_exception(exc))
    try:
        job_error_path(store, job.id).write_text(text)
    except OSError:  # the disk may be the very problem: the log line below still says why
        pass
    log.error("job %s failed: %s\n%s", job.id, reason, text)
    return JobOutcome(job.id, "failed", seconds, reason, isinstance(exc, UserError))


def record_lost_job(root: str, job: Job, reason: str) -> JobOutcome:
    """A job whose process died under it (a killed Ray worker, a SLURM time limit): the driver records
    the failure as `run_job` would have (`logs/<job>.err`, read by `acbench status`) and removes the
    dead job's temporary artifact folder, which no live process builds any more."""
    store = RunStore(root)
    try:
        job_error_path(store, job.id).write_text(f"{reason}\n")
        with open(job_log_path(store, job.id), "a") as fh:  # the log the summary line points to
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR acbench: job {job.id} failed: {reason}\n")
        final = store.path(job)
        if final.parent.is_dir():
            for leftover in final.parent.glob(f".tmp-{final.name}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
    except OSError:  # the one-line reason still reaches the summary
        pass
    log.info("job %s failed: %s", job.id, reason)  # the run log; the console shows the summary line
    return JobOutcome(job.id, "failed", error=reason)


def attach_file_log(path: Path) -> logging.Handler:
    """Send INFO and up to `path` (a job's or the run's log); console handlers keep their own level."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(JOB_LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    handler.previous_level = root.level  # type: ignore[attr-defined]
    root.setLevel(min(root.getEffectiveLevel(), logging.INFO))  # console handlers keep their own level
    return handler


def detach_file_log(handler: logging.Handler) -> None:
    root = logging.getLogger()
    root.removeHandler(handler)
    root.setLevel(handler.previous_level)  # type: ignore[attr-defined]
    handler.close()
