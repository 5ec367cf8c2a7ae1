"""GPU packing for the Ray executor: one heavy job per GPU, light jobs several to a GPU.

    executor: {kind: ray, gpus_per_job: 1, cpus_per_job: 4,
               options: {light_jobs_per_gpu: 4, gpu_memory_gb: 141, heavy_stages: [fit, generate]}}

Every job's resource request comes from its cost figure (`acbench.engine.costs`: run timings, hardware
measurements, preset figures): a job whose figure uses no GPU (classic generation, pair statistics) asks
for none; a job of a heavy stage (diffusion training and sampling keep a GPU busy on their own) asks for
`gpus_per_job`; any other GPU job (detector training, quality metrics) asks for `gpus_per_job /
light_jobs_per_gpu` when that many of it fit in `gpu_memory_gb` by its peak memory figure, else for a
whole `gpus_per_job`. Ray then runs up to `light_jobs_per_gpu` light jobs side by side on a GPU.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acbench.engine.costs import job_figures
from acbench.engine.plan import Job
from acbench.errors import UserError
from acbench.protocol import ExecutorConfig


class PackingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    light_jobs_per_gpu: int = Field(1, ge=1, description="light jobs sharing one GPU (1: no packing)")
    gpu_memory_gb: float = Field(80.0, gt=0, description="memory of one GPU, to check that light jobs fit")
    heavy_stages: list[str] = Field(default_factory=lambda: ["fit", "generate"],
                                    description="stages whose GPU jobs get a whole GPU each")


def packing_options(config: ExecutorConfig) -> PackingOptions:
    """The packing keys of `executor.options`; a mistake is one line naming the key."""
    keys = {k: v for k, v in config.options.items() if k in PackingOptions.model_fields}
    unknown = sorted(set(config.options) - set(keys))
    if unknown:
        raise UserError(f"executor.options: unknown key '{unknown[0]}' for the ray executor; use "
                        f"{', '.join(PackingOptions.model_fields)}")
    try:
        return PackingOptions.model_validate(keys)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"executor.options.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def job_resources(job: Job, config: ExecutorConfig, options: PackingOptions) -> dict[str, Any]:
    """Ray resource request of one job: `num_cpus` and `num_gpus`."""
    figures = [fig for fig, _ in job_figures(job, {})]
    uses_gpu = any(fig.gpu for fig in figures)
    gpus = config.gpus_per_job
    if uses_gpu and gpus > 0 and job.stage not in options.heavy_stages and options.light_jobs_per_gpu > 1:
        peak = max(fig.peak_gb for fig in figures)
        if peak * options.light_jobs_per_gpu <= options.gpu_memory_gb * gpus:
            gpus = gpus / options.light_jobs_per_gpu
    return {"num_cpus": config.cpus_per_job, "num_gpus": gpus if uses_gpu else 0}
