"""Distributed executors give the local executor's results: Ray (a local instance) and SLURM (submitit's
local executor, the same code path without a cluster).

The protocol has every kind of job: a dataset-scope fit (AnomalyDiffusion, tiny), its generation,
a quality job and a trained detector (U-Net, one epoch). Rows, predictions, generated PNGs and fit
weights must be byte-identical whichever executor ran them.
"""

from __future__ import annotations

import io
import json
import sys

import pandas as pd
import pytest
from engine_helpers import TINY, error_lines, leftovers, results, run_cli, write_protocol

from acbench.engine import run_study
from acbench.engine.slurm_executor import timeout_minutes
from acbench.errors import UserError
from acbench.protocol import parse_protocol


EVERY_STAGE = {
    "methods": [{"name": "anomalydiffusion", "options": {"model": "tiny", "schedule": "tiny",
                                                         "mask_source": {"name": "real-augmented"}}}],
    "detectors": [{"name": "unet-localization", "preset": "tiny", "options": {"epochs": 1, "samples_per_epoch": 16}}],
    "report": {"sample_grid": False},
}
JOBS = ["fit/anomalydiffusion/_all/0", "generate/anomalydiffusion/brick/0", "quality/anomalydiffusion/brick/0",
        "detect/unet-localization/anomalydiffusion/brick/0"]


def _outputs(root) -> dict[str, bytes]:
    """What must not depend on the executor: generated pairs, fit weights, per-image predictions."""
    files = [p for p in (root / "artifacts").rglob("*") if p.is_file() and (
        p.suffix == ".png" or p.name in ("predictions.csv", "index.csv")
        or (p.suffix == ".safetensors" and p.parent.name == "0"))]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def _same_as_local(local, other, stages=("fit", "generate", "quality", "detect")) -> None:
    def rows(root):
        frame = results(root)
        frame = frame[frame["stage"].isin(stages)].reset_index(drop=True)
        frame = frame.loc[:, (frame != "").any()]  # columns only other stages fill
        return pd.read_csv(io.StringIO(frame.to_csv(index=False)), keep_default_na=False)  # their dtypes too

    # a subset of stages: an int column of one run may be float in the other (NaN in the other stages' rows)
    pd.testing.assert_frame_equal(rows(local), rows(other), check_dtype=len(stages) == 4)
    want, got = _outputs(local), _outputs(other)
    assert sorted(got) == sorted(want)
    assert sum(k.endswith(".png") for k in want) == 12 and any(k.endswith("predictions.csv") for k in want)
    assert [k for k in want if got[k] != want[k]] == []


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = run_study(parse_protocol({**TINY, **EVERY_STAGE}), out=out, report=False)
    assert result.ok and sorted(result.ran) == sorted(JOBS)
    return out


def test_ray_executor_equals_local(monkeypatch, capsys, tmp_path, local_reference):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'acbench[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        protocol = write_protocol(tmp_path, **EVERY_STAGE)
        code = run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "ray", "--quiet", "--executor", "ray")
        assert code == 0, capsys.readouterr().err
        assert "on the ray executor" in capsys.readouterr().err
    finally:
        ray.shutdown()
    _same_as_local(local_reference, tmp_path / "ray")
    # each job ran in a Ray worker process, wrote its own log there, and committed atomically
    logs = sorted(p.name for p in (tmp_path / "ray" / "logs").glob("*.log"))
    assert logs == sorted(["run.log"] + [p.name for p in (local_reference / "logs").glob("*__*.log")])
    assert leftovers(tmp_path / "ray") == []


def test_slurm_executor_through_submitit_equals_local(tmp_path, local_reference):
    """Each job is a submitit job (a fresh process, as on a SLURM node). No quality job here: one process
    less to start, and the other jobs' hashes do not depend on it."""
    pytest.importorskip("submitit", reason="SLURM support is an optional extra: pip install 'acbench[slurm]'")
    protocol = parse_protocol({**TINY, **EVERY_STAGE, "metrics": [], "executor": {
        "kind": "slurm", "partition": "gpu", "time": "00:10:00", "options": {"cluster": "local"}}})
    result = run_study(protocol, out=tmp_path / "slurm", report=False)
    assert result.ok and sorted(result.ran) == sorted(j for j in JOBS if not j.startswith("quality"))
    _same_as_local(local_reference, tmp_path / "slurm", stages=("detect",))
    manifest = json.loads((tmp_path / "slurm" / "manifest.json").read_text())
    markers = [json.loads(p.read_text()) for p in (tmp_path / "slurm" / "artifacts").rglob("DONE.json")]
    assert manifest["threads_per_job"] == 1 and {m["threads"] for m in markers} == {1}
    assert any((tmp_path / "slurm" / "logs" / "submitit").iterdir())  # submitit's own job records


def test_missing_ray_is_one_line_with_the_install_command(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code = run_cli(monkeypatch, "run", write_protocol(tmp_path), "--out", tmp_path / "run", "--executor", "ray")
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1 and "pip install 'acbench[ray]'" in lines[0]
    assert not (tmp_path / "run" / "artifacts").exists()


def test_slurm_time_formats():
    assert timeout_minutes("90") == 90
    assert timeout_minutes("04:00:00") == 240
    assert timeout_minutes("1-12:00:00") == 36 * 60
    assert timeout_minutes("00:10:30") == 11  # seconds round up: never shorter than asked
    assert timeout_minutes("30:00") == 30  # M:S
    assert timeout_minutes("2-6") == 54 * 60  # D-H
    assert timeout_minutes("1-00:30") == 24 * 60 + 30  # D-H:M
    with pytest.raises(UserError, match="executor.time"):
        timeout_minutes("four hours")


def test_slurm_without_slurm_is_one_line(monkeypatch, capsys, tmp_path):
    pytest.importorskip("submitit")
    protocol = write_protocol(tmp_path, executor={"kind": "slurm", "partition": "gpu"})
    assert run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "run", "--quiet") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "srun" in lines[0] and "cluster: local" in lines[0]


def test_unreachable_ray_cluster_is_one_line(monkeypatch, capsys, tmp_path):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    protocol = write_protocol(tmp_path, executor={"kind": "ray", "address": "auto"})
    assert run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "run", "--quiet") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "executor.address" in lines[0] and "ray start --head" in lines[0]
