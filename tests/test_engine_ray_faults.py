"""Faults under the Ray executor: kill the driver, kill a worker mid-job, re-run.

`acbench run --executor ray` runs as a subprocess that starts its own local Ray instance (in its own
process group). The protocol has a fast generate and quality job and a slow detector job, so there
is a moment at which some jobs are finished and one is running: the kills happen there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from engine_helpers import TINY, leftovers, results, write_protocol

from acbench.engine import run_study
from acbench.engine.status import run_status
from acbench.protocol import parse_protocol

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'acbench[ray]'")

SLOW_DETECTOR = {"detectors": [{"name": "unet-localization", "preset": "tiny",
                                "options": {"epochs": 1, "samples_per_epoch": 8}}],
                 "report": {"sample_grid": False}}
FAST = ["generate/cutpaste@patch/brick/0", "quality/cutpaste@patch/brick/0"]
SLOW = "detect/unet-localization/cutpaste@patch/brick/0"


def _start(protocol: Path, out: Path) -> subprocess.Popen:
    acbench = Path(sys.executable).with_name("acbench")
    return subprocess.Popen([str(acbench), "run", str(protocol), "--out", str(out), "--quiet", "--executor", "ray"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "OMP_NUM_THREADS": "1"})


def _markers(out: Path) -> dict[str, tuple[float, int]]:
    """Each finished artifact: its DONE.json `finished` time and inode (a redone job changes both)."""
    found = {}
    for marker in (out / "artifacts").rglob("DONE.json"):
        if not any(part.startswith(".tmp-") for part in marker.parts):
            found[json.loads(marker.read_text())["job"]] = (json.loads(marker.read_text())["finished"],
                                                            marker.stat().st_ino)
    return found


def _until(condition, proc: subprocess.Popen, what: str, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()[1][-2000:]}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _slow_job_running(out: Path) -> bool:
    """The slow job is mid-way: the fast ones are committed and its temporary artifact folder exists."""
    store_dir = out / "artifacts" / "detect" / "unet-localization" / "cutpaste@patch" / "brick"
    return set(FAST) <= set(_markers(out)) and store_dir.is_dir() and any(store_dir.glob(".tmp-0-*"))


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's whole process group (driver, its Ray head and workers)."""
    family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    for pid in family:  # anything that left the group dies too: a test leaves no process behind
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


def _ray_task_process(proc: subprocess.Popen):
    """The Ray worker process executing a job (Ray titles it `ray::run_job` while the task runs)."""
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if " ".join(child.cmdline()).startswith("ray::run_job"):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_ray_driver_and_worker_kills_keep_finished_jobs_and_rerun_equals_uninterrupted(tmp_path):
    protocol = write_protocol(tmp_path, **SLOW_DETECTOR)
    reference = run_study(parse_protocol({**TINY, **SLOW_DETECTOR}), out=tmp_path / "reference", report=False)
    assert reference.ok and sorted(reference.ran) == sorted(FAST + [SLOW])
    out = tmp_path / "ray"

    # 1. kill -9 the driver (and its Ray instance) while the detector trains
    proc = _start(protocol, out)
    try:
        _until(lambda: _slow_job_running(out), proc, "the detector job started")
    finally:
        _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    kept = _markers(out)
    assert sorted(kept) == sorted(FAST)  # committed jobs are there; the killed one is not
    assert not (out / "results.csv").exists()

    # 2. re-run; kill -9 the Ray worker that runs the detector: that job fails with one line, the run ends
    proc = _start(protocol, out)
    try:
        worker = _until(lambda: _slow_job_running(out) and _ray_task_process(proc), proc, "a Ray worker ran a job")
        worker.kill()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    assert proc.returncode == 1, stderr
    failure = [ln for ln in stderr.splitlines() if SLOW in ln]
    assert len(failure) == 1 and failure[0].startswith("failed") and "Ray" in failure[0], stderr
    assert "Traceback" not in stderr
    assert _markers(out) == kept  # the finished jobs were cached, not redone
    status = run_status(out)
    assert status.jobs["failed"] == [SLOW] and "worker" in status.errors[SLOW].lower()
    assert leftovers(out) == []  # the dead worker's temporary artifact was removed by the driver
    assert "worker died" in (out / "logs" / "detect__unet-localization__cutpaste@patch__brick__0.log").read_text()

    # 3. an uninterrupted re-run finishes the study: the same results as a run that was never killed
    proc = _start(protocol, out)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert _markers(out).items() >= kept.items()
    pd.testing.assert_frame_equal(results(tmp_path / "reference"), results(out))
    assert leftovers(out) == []
    assert run_status(out).counts() == {"done": 3, "running": 0, "failed": 0, "pending": 0}
