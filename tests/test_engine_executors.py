"""Distributed executors give the local executor's results: Ray (a local instance) and SLURM (submitit's
local executor, the same code path without a cluster)."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from engine_helpers import TINY, error_lines, leftovers, results, run_cli, write_protocol

from acbench.engine import run_study
from acbench.engine.slurm_executor import timeout_minutes
from acbench.errors import UserError
from acbench.protocol import parse_protocol


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = run_study(parse_protocol(TINY), out=out, report=False)
    assert result.ok and len(result.ran) == 2
    return out


def test_ray_executor_equals_local(monkeypatch, capsys, tmp_path, local_reference):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'acbench[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        protocol = write_protocol(tmp_path)
        code = run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "ray", "--quiet", "--executor", "ray")
        assert code == 0, capsys.readouterr().err
        assert "on the ray executor" in capsys.readouterr().err
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(results(local_reference), results(tmp_path / "ray"))
    # each job ran in a Ray worker process, wrote its own log there, and committed atomically
    logs = sorted(p.name for p in (tmp_path / "ray" / "logs").glob("*.log"))
    assert logs == sorted(["run.log"] + [p.name for p in (local_reference / "logs").glob("*__*.log")])
    assert leftovers(tmp_path / "ray") == []


def test_slurm_executor_through_submitit_equals_local(tmp_path, local_reference):
    """Each job is a submitit job (a fresh process, as on a SLURM node)."""
    pytest.importorskip("submitit", reason="SLURM support is an optional extra: pip install 'acbench[slurm]'")
    protocol = parse_protocol({**TINY, "executor": {
        "kind": "slurm", "partition": "gpu", "time": "00:10:00", "options": {"cluster": "local"}}})
    result = run_study(protocol, out=tmp_path / "slurm", report=False)
    assert result.ok and len(result.ran) == 2
    pd.testing.assert_frame_equal(results(local_reference), results(tmp_path / "slurm"))
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
