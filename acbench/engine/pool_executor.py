"""The local executor with several worker processes (`executor: {kind: local, workers: N}`).

Independent jobs run side by side on one machine, each in a worker process of its own (spawned, so no
thread pool or CUDA context is inherited), each computing with `executor.cpus_per_job` threads like a
job anywhere else: results do not depend on how many run at once. The driver keeps the dependency
order (`DependencyScheduler`); a worker that dies takes only its job with it (recorded as failed).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import sys
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from acbench.engine.executors import DependencyScheduler
from acbench.engine.plan import Job
from acbench.engine.store import RunStore
from acbench.engine.worker import JobOutcome, run_job
from acbench.protocol import Protocol


def _quiet_worker(logs: str) -> None:
    """Workers log to their job files only; what libraries print (warnings, tqdm bars) goes to
    `logs/worker-<pid>.stderr`, so the driver's console keeps to progress and the summary."""
    root = logging.getLogger()
    root.addHandler(logging.NullHandler())
    root.setLevel(logging.INFO)
    sink = open(os.path.join(logs, f"worker-{os.getpid()}.stderr"), "a", buffering=1)  # open for the process
    os.dup2(sink.fileno(), 2)
    sys.stderr = sink


class PoolExecutor(DependencyScheduler):
    poll_seconds = 0.2

    def __init__(self, device: str, workers: int) -> None:
        self.device = device
        self.workers = workers

    def open(self, protocol: Protocol, store: RunStore) -> None:
        self.protocol_json = protocol.model_dump_json()
        self.root = str(store.root)
        self.logs = str(store.logs)
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_quiet_worker, initargs=(self.logs,))

    def submit(self, job: Job) -> Any:
        return self.pool.submit(run_job, self.protocol_json, self.root, job, self.device)

    def wait(self, handles: list[Any]) -> list[Any]:
        done, _ = cf.wait(handles, timeout=self.poll_seconds, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def outcome(self, handle: Any, job: Job) -> JobOutcome:
        try:
            return handle.result()
        except BrokenProcessPool as exc:  # a worker was killed (out of memory, a signal): this job failed
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return JobOutcome(job.id, "failed", 0.0, f"worker process died ({exc.__class__.__name__})")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
