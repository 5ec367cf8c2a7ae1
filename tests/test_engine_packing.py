"""Ray packing: one heavy job per GPU, light GPU jobs several to a GPU, CPU-only jobs on no GPU; checked on
the resource requests of a real plan and on a local Ray cluster with declared (fake) GPUs."""

from __future__ import annotations

import time

import pytest

from acbench.engine.packing import PackingOptions, job_resources, packing_options
from acbench.engine.plan import plan
from acbench.errors import UserError
from acbench.protocol import ExecutorConfig, parse_protocol

STUDY = {
    "name": "packing",
    "dataset": {"kind": "demo", "categories": ["brick"]},
    "methods": [{"name": "cutpaste"}, {"name": "anomalycontrol", "options": {"model": "sd15"}}],
    "metrics": ["pair-stats", "ic-lpips"],
    "detectors": [{"name": "unet-localization", "preset": "paper"}, {"name": "patchcore", "preset": "paper"}],
}


def requests(executor: dict) -> dict[str, float]:
    protocol = parse_protocol({**STUDY, "executor": {"kind": "ray", **executor}})
    options = packing_options(protocol.executor)
    return {j.id: job_resources(j, protocol.executor, options)["num_gpus"] for j in plan(protocol, ["brick"])}


def test_heavy_jobs_get_a_gpu_light_ones_share_cpu_ones_get_none():
    gpus = requests({"gpus_per_job": 1, "options": {"light_jobs_per_gpu": 4, "gpu_memory_gb": 80}})
    assert gpus["fit/anomalycontrol/_all/0"] == 1 and gpus["generate/anomalycontrol/brick/0"] == 1
    assert gpus["generate/cutpaste/brick/0"] == 0  # classic methods: CPU image operations
    assert gpus["quality/anomalycontrol/brick/0"] == 0.25  # IC-LPIPS: 2 GB figure, 4 fit in 80 GB
    assert gpus["detect/unet-localization/cutpaste/brick/0"] == 0.25  # 10 GB figure
    assert gpus["detect/patchcore/none/brick/0"] == 0.25  # 6 GB figure
    # a smaller GPU: four 10 GB detector jobs no longer fit, so each gets a whole GPU; 4 x 6 GB still do
    small = requests({"gpus_per_job": 1, "options": {"light_jobs_per_gpu": 4, "gpu_memory_gb": 24}})
    assert small["detect/unet-localization/cutpaste/brick/0"] == 1
    assert small["detect/patchcore/none/brick/0"] == 0.25 and small["quality/anomalycontrol/brick/0"] == 0.25
    # no packing asked for: the former request, gpus_per_job for every job that uses a GPU
    plain = requests({"gpus_per_job": 1})
    assert {v for k, v in plain.items() if not k.startswith("generate/cutpaste")} == {1}
    assert set(requests({}).values()) == {0}  # gpus_per_job 0 (CPU cluster): no GPU anywhere


def test_bad_packing_options_are_one_line_before_any_job():
    from acbench.engine.ray_executor import RayExecutor

    with pytest.raises(UserError, match=r"executor.options: unknown key 'jobs_per_gpu'.*light_jobs_per_gpu"):
        RayExecutor(ExecutorConfig(kind="ray", options={"jobs_per_gpu": 4}), "cpu")
    with pytest.raises(UserError, match=r"executor.options.light_jobs_per_gpu: .*greater than or equal to 1"):
        RayExecutor(ExecutorConfig(kind="ray", options={"light_jobs_per_gpu": 0}), "cpu")
    assert packing_options(ExecutorConfig()) == PackingOptions()


def test_a_local_ray_cluster_packs_light_jobs_and_keeps_heavy_ones_apart():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'acbench[ray]'")
    protocol = parse_protocol({**STUDY, "executor": {"kind": "ray", "gpus_per_job": 1, "cpus_per_job": 0.5,
                                                     "options": {"light_jobs_per_gpu": 3}}})
    options = packing_options(protocol.executor)
    jobs = {j.id: j for j in plan(protocol, ["brick"])}
    light = job_resources(jobs["detect/unet-localization/cutpaste/brick/0"], protocol.executor, options)
    heavy = job_resources(jobs["generate/anomalycontrol/brick/0"], protocol.executor, options)
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)  # one declared GPU
    try:
        @ray.remote(num_cpus=0)
        class Tally:
            def __init__(self):
                self.now, self.most = 0, 0

            def enter(self):
                self.now += 1
                self.most = max(self.most, self.now)

            def leave(self):
                self.now -= 1

            def peak(self):
                return self.now, self.most

        def job(tally, wait_for: int, hold: float):
            ray.get(tally.enter.remote())
            deadline = time.time() + hold
            while time.time() < deadline and ray.get(tally.peak.remote())[1] < wait_for:
                time.sleep(0.05)
            time.sleep(0.2)
            ray.get(tally.leave.remote())

        task = ray.remote(job)
        tally = Tally.remote()
        # three light jobs hold until all three run at once: only possible if they share the one GPU
        ray.get([task.options(**light).remote(tally, 3, 120.0) for _ in range(3)])
        assert ray.get(tally.peak.remote())[1] == 3
        tally = Tally.remote()
        ray.get([task.options(**heavy).remote(tally, 2, 3.0) for _ in range(2)])
        assert ray.get(tally.peak.remote())[1] == 1  # a whole GPU each: never side by side
    finally:
        ray.shutdown()


def test_the_executor_submits_each_job_with_its_own_request():
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'acbench[ray]'")
    from acbench.engine.ray_executor import RayExecutor

    protocol = parse_protocol({**STUDY, "executor": {"kind": "ray", "gpus_per_job": 1, "cpus_per_job": 2,
                                                     "options": {"light_jobs_per_gpu": 4}}})
    executor = RayExecutor(protocol.executor, "cpu")
    asked = []

    class Task:  # what `ray.remote(run_job)` offers: options(**request).remote(...)
        def options(self, **request):
            asked.append(request)
            return self

        def remote(self, *args):
            return args

    executor.task, executor.protocol_ref, executor.root = Task(), "protocol", "/run"
    jobs = {j.id: j for j in plan(protocol, ["brick"])}
    for job_id in ("generate/anomalycontrol/brick/0", "detect/patchcore/none/brick/0", "generate/cutpaste/brick/0"):
        executor.submit(jobs[job_id])
    assert asked == [{"num_cpus": 2, "num_gpus": 1, "max_retries": 0}, {"num_cpus": 2, "num_gpus": 0.25,
                     "max_retries": 0}, {"num_cpus": 2, "num_gpus": 0, "max_retries": 0}]
