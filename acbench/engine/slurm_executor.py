"""The SLURM executor, through submitit: each job is one SLURM job with the protocol's resources.

    executor: {kind: slurm, partition: gpu, gpus_per_job: 1, cpus_per_job: 8, time: "04:00:00",
               options: {slurm_account: my-lab, mem_gb: 64}}

`options` go to `submitit.AutoExecutor.update_parameters` unchanged (any `slurm_*` key works);
`options.cluster: local` runs the same code path on this machine without SLURM (how it is tested).
Submission scripts, stdout and stderr of every SLURM job land in `<run>/logs/submitit/`.
"""

from __future__ import annotations

import re
import time
from typing import Any

from acbench.engine.executors import DependencyScheduler
from acbench.engine.plan import Job
from acbench.engine.store import RunStore
from acbench.engine.worker import JobOutcome, record_lost_job, run_job
from acbench.errors import UserError
from acbench.protocol import ExecutorConfig, Protocol

INSTALL_HINT = "pip install 'acbench[slurm]'"
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def timeout_minutes(text: str | None, default: int = 24 * 60) -> int:
    """A SLURM --time value as whole minutes (seconds round up).

    SLURM's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
    """
    if text is None:
        return default
    match = _TIME.match(str(text).strip())
    if not match:
        raise UserError(f"executor.time: '{text}' is not a SLURM time; write minutes, 'HH:MM:SS' or "
                        "'D-HH:MM:SS'")
    days, *fields = match.groups()
    values = [int(f) for f in fields if f is not None]
    if days is not None:
        hours, minutes, seconds = (values + [0, 0])[:3]
    else:
        hours, minutes, seconds = {1: [0, values[0], 0], 2: [0, *values], 3: values}[len(values)]
    total = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    return -(-total // 60)


class SlurmExecutor(DependencyScheduler):
    poll_seconds = 1.0

    def __init__(self, config: ExecutorConfig, device: str) -> None:
        try:
            import submitit
        except ImportError:
            raise UserError(f"executor.kind 'slurm' needs submitit, which is not installed: {INSTALL_HINT}") \
                from None
        self.submitit = submitit
        self.config = config
        self.device = device  # resolved by the driver, the same for every job

    def open(self, protocol: Protocol, store: RunStore) -> None:
        cfg = self.config
        options = dict(cfg.options)
        cluster = options.pop("cluster", "slurm")  # never a silent fall-back to this machine
        self.poll_seconds = float(options.pop("poll_seconds", self.poll_seconds))
        try:
            self.executor = self.submitit.AutoExecutor(folder=store.logs / "submitit" / "%j", cluster=cluster)
        except RuntimeError as exc:  # no srun/sbatch here
            raise UserError(f"executor.kind 'slurm': {str(exc).splitlines()[0]} (run on a SLURM login node, "
                            "or set executor.options.cluster: local to run the jobs on this machine)") from None
        params: dict[str, Any] = {"name": f"acbench-{protocol.name}", "timeout_min": timeout_minutes(cfg.time),
                                  "gpus_per_node": int(cfg.gpus_per_job), "cpus_per_task": int(cfg.cpus_per_job)}
        if cfg.partition:
            params["slurm_partition"] = cfg.partition
        try:
            self.executor.update_parameters(**params, **options)
        except (ValueError, TypeError) as exc:
            raise UserError(f"executor.options: {str(exc).splitlines()[0]}") from None
        self.protocol_json = protocol.model_dump_json()
        self.root = str(store.root.resolve())

    def submit(self, job: Job) -> Any:
        return self.executor.submit(run_job, self.protocol_json, self.root, job, self.device)

    def wait(self, handles: list[Any]) -> list[Any]:
        finished = [h for h in handles if h.done()]
        if not finished:  # at most one poll interval: the driver shows progress in between
            time.sleep(self.poll_seconds)
            finished = [h for h in handles if h.done()]
        return finished

    def outcome(self, handle: Any, job: Job) -> JobOutcome:
        try:
            return handle.result()
        except Exception as exc:  # the SLURM job itself died (time limit, preemption, node failure)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            return record_lost_job(self.root, job, f"SLURM job {handle.job_id} failed: {first} "
                                                   f"(see {self.root}/logs/submitit/{handle.job_id})")
