"""Live per-job progress under the Ray and SLURM executors: job starts, within-job steps (read from the
progress file each worker writes) and job ends reach the same progress object as under the local one."""

from __future__ import annotations

import pytest
from engine_helpers import TINY, leftovers

from acbench.engine import run_study
from acbench.engine.executors import DependencyScheduler
from acbench.engine.progress import NullProgress, RichProgress
from acbench.engine.store import RunStore
from acbench.engine.worker import ProgressFile, job_progress_path, run_job
from acbench.protocol import parse_protocol

JOBS = ["generate/cutpaste@patch/brick/0", "quality/cutpaste@patch/brick/0"]


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, jobs):
        self.calls.append(("start", len(jobs)))

    def job_start(self, job):
        self.calls.append(("job_start", job.id))

    def job_done(self, job, status):
        self.calls.append(("job_done", job.id, status))

    def job_progress(self, job, done, total):
        self.calls.append(("job_progress", job.id, done, total))

    def of(self, job_id: str) -> list[tuple]:
        return [c[:1] + c[2:] for c in self.calls if len(c) > 1 and c[1] == job_id]


def _assert_reported(recorder: Recorder, root) -> None:
    for job_id in JOBS:
        calls = recorder.of(job_id)
        assert calls[0] == ("job_start",) and calls[-1] == ("job_done", "done"), calls
        steps = [c[1:] for c in calls if c[0] == "job_progress"]
        assert steps and steps[-1][0] == steps[-1][1] > 0, calls  # the last step: all of the job's work
        assert all(a[0] <= b[0] for a, b in zip(steps, steps[1:], strict=False))  # never backwards
    assert list((root / "logs").glob("*.progress")) == []  # the driver removes each after its job


class SteppingScheduler(DependencyScheduler):
    """A backend whose 'remote' job waits in a queue, then reports two steps through its progress file
    before it finishes, one per wait, as a Ray or SLURM worker would while the driver polls."""

    def open(self, protocol, store):
        self.args, self.store, self.waits = (protocol.model_dump_json(), str(store.root)), store, {}

    def submit(self, job):
        self.waits[job.id] = 0
        return job

    def wait(self, handles):
        job = handles[0]
        self.waits[job.id] += 1
        if self.waits[job.id] == 1:  # queued: no step written yet
            return []
        if self.waits[job.id] <= 3:  # running: the worker wrote a step
            ProgressFile(job_progress_path(self.store, job.id))(self.waits[job.id] - 1, 10)
            return []
        self.outcomes = {job.id: run_job(*self.args, job, "cpu")}  # no callback: the file is written
        return [job]

    def outcome(self, handle, job):
        return self.outcomes[job.id]


def test_scheduler_shows_steps_while_jobs_run(monkeypatch, tmp_path):
    monkeypatch.setattr("acbench.engine.runner.make_executor", lambda protocol, device: SteppingScheduler())
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "generate__cutpaste@patch__brick__0.progress").write_text("9 10\n")  # left by a killed run
    (logs / ".generate__cutpaste@patch__brick__0.progress.x1.tmp").write_text("9")  # killed mid-write
    recorder = Recorder()
    assert run_study(parse_protocol(TINY), out=tmp_path / "run", progress=recorder, report=False).ok
    assert leftovers(tmp_path / "run") == []
    steps = [c[1:] for c in recorder.of(JOBS[0]) if c[0] == "job_progress"]
    assert steps[:2] == [(1, 10), (2, 10)] and steps[-1][0] == steps[-1][1] != 10  # the job's own last step
    _assert_reported(recorder, tmp_path / "run")


def test_progress_file_is_throttled_but_keeps_the_last_step(tmp_path):
    store = RunStore(tmp_path)
    write = ProgressFile(job_progress_path(store, "a/b"), every=3600)
    write(1, 5)
    write(2, 5)  # within the interval: not written
    assert job_progress_path(store, "a/b").read_text().split() == ["1", "5"]
    write(5, 5)  # the last step always is
    assert job_progress_path(store, "a/b").read_text().split() == ["5", "5"]


def test_ray_reports_each_jobs_progress(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'acbench[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    recorder = Recorder()
    try:
        result = run_study(parse_protocol({**TINY, "executor": {"kind": "ray"}}), out=tmp_path / "ray",
                           progress=recorder, report=False)
    finally:
        ray.shutdown()
    assert result.ok and sorted(result.ran) == JOBS
    _assert_reported(recorder, tmp_path / "ray")


def test_slurm_reports_each_jobs_progress(tmp_path):
    pytest.importorskip("submitit", reason="SLURM support is an optional extra: pip install 'acbench[slurm]'")
    recorder = Recorder()
    protocol = parse_protocol({**TINY, "executor": {"kind": "slurm", "options": {"cluster": "local",
                                                                                   "poll_seconds": 0.2}}})
    result = run_study(protocol, out=tmp_path / "slurm", progress=recorder, report=False)
    assert result.ok and sorted(result.ran) == JOBS
    _assert_reported(recorder, tmp_path / "slurm")


def test_rich_progress_keeps_one_bar_per_running_job():
    from rich.console import Console

    from acbench.engine.plan import Job

    bar = RichProgress(Console(file=open("/dev/null", "w")))
    jobs = [Job(stage="generate", method="m", category="c", seed=i) for i in range(2)]
    bar.start(jobs)
    for job in jobs:
        bar.job_start(job)
    bar.job_progress(jobs[1], 3, 4)
    assert [(t.description.strip(), t.completed, t.total) for t in bar.bar.tasks[1:]] == \
        [("generate/m/c/0", 0, 1), ("generate/m/c/1", 3, 4)]
    bar.job_done(jobs[0], "done")
    assert [t.description.strip() for t in bar.bar.tasks[1:]] == ["generate/m/c/1"]
    bar.stop()
