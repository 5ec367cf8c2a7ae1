"""The Ray executor: each job becomes a Ray task with the protocol's resource request.

    executor: {kind: ray, address: auto, gpus_per_job: 1, cpus_per_job: 8, options: {light_jobs_per_gpu: 4}}

Each job asks for the resources `acbench.engine.packing.job_resources` gives it: no GPU for CPU-only
work, a whole GPU for heavy stages, a fraction for light GPU jobs (several per GPU).

Ray places tasks on whichever node has a free GPU; every node must see the run folder at the same
path (a shared file system: NFS, Lustre, a mounted bucket), because jobs read their inputs from it
and commit their artifacts into it with the run store's atomic rename.
"""

from __future__ import annotations

import logging
from typing import Any

from acbench.engine.executors import DependencyScheduler
from acbench.engine.packing import job_resources, packing_options
from acbench.engine.plan import Job
from acbench.engine.store import RunStore
from acbench.engine.worker import JobOutcome, record_lost_job, run_job
from acbench.errors import UserError
from acbench.protocol import ExecutorConfig, Protocol

INSTALL_HINT = "pip install 'acbench[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"executor.kind 'ray' needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class RayExecutor(DependencyScheduler):
    def __init__(self, config: ExecutorConfig, device: str) -> None:
        self.config = config
        self.device = device  # resolved by the driver, the same for every job
        self.packing = packing_options(config)  # checked before Ray starts or any job runs
        self.ray = import_ray()
        self.started_here = False

    def open(self, protocol: Protocol, store: RunStore) -> None:
        ray = self.ray
        if not ray.is_initialized():  # a caller (a notebook, a test) may have started Ray already
            try:
                ray.init(address=self.config.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except ConnectionError as exc:
                raise UserError(f"executor.address: cannot reach a Ray cluster at '{self.config.address}' "
                                f"({str(exc).splitlines()[0]}); start one with `ray start --head` or remove "
                                "the address to start Ray on this machine") from None
            self.started_here = True
        # Failed jobs are recorded by run_job itself; Ray must not silently re-run them.
        self.task = ray.remote(run_job)
        self.protocol_ref = ray.put(protocol.model_dump_json())
        self.root = str(store.root.resolve())

    def submit(self, job: Job) -> Any:
        task = self.task.options(**job_resources(job, self.config, self.packing), max_retries=0)
        return task.remote(self.protocol_ref, self.root, job, self.device)

    def wait(self, handles: list[Any]) -> list[Any]:
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=self.poll_seconds)
        return ready

    def outcome(self, handle: Any, job: Job) -> JobOutcome:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayError as exc:  # the worker died (OOM kill, lost node)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            return record_lost_job(self.root, job, f"Ray task failed: {first}")

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False
