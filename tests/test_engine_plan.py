"""Planning before spending (jobs, weights, cost estimates), `status`, and security hygiene."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from engine_helpers import TINY, needs_weights, run_cli, write_protocol  # noqa: F401

from acbench.engine import RunStore, run_study
from acbench.engine.costs import FIGURES, reference_figure
from acbench.engine.overview import plan_study
from acbench.engine.status import run_status
from acbench.errors import UserError
from acbench.protocol import load_protocol, parse_protocol

REPO = Path(__file__).resolve().parent.parent


def test_reference_figures_fall_back_from_preset_to_stage():
    assert reference_figure("fit:anomalycontrol:sd15") is FIGURES["fit:anomalycontrol:sd15"]
    assert reference_figure("detect:supersimplenet-supervised:paper") is FIGURES["detect:*:paper"]
    assert reference_figure("detect:patchcore:paper") is FIGURES["detect:patchcore:paper"]
    assert reference_figure("generate:cutpaste") is FIGURES["generate"]
    assert reference_figure("quality:fid") is FIGURES["quality"]


def test_plan_prices_pending_jobs_from_figures_then_from_recorded_timings(tmp_path):
    protocol = parse_protocol({**TINY, "detectors": []})
    before = {s.stage: s for s in plan_study(protocol, tmp_path / "run").stages}
    images = 2 * 3  # per_type x the three defect types of brick
    assert before["generate"].pending == 1
    assert before["generate"].cpu_hours == pytest.approx(FIGURES["generate"].seconds * images / 3600)
    assert before["generate"].sources == {"preset figure"}

    run_study(protocol, out=tmp_path / "run", report=False)
    marker = RunStore(tmp_path / "run").marker(plan_study(protocol, tmp_path / "run").jobs[0])
    assert marker["cost_key"] == "generate:cutpaste" and marker["pairs"] == images
    # the next study (another folder beside it) is priced from what this one measured
    after = {s.stage: s for s in plan_study(protocol, tmp_path / "next").stages}
    assert after["generate"].sources == {"measured (1 jobs)"}
    assert after["generate"].cpu_hours == pytest.approx(marker["seconds"] / images * images / 3600)
    done = {s.stage: s for s in plan_study(protocol, tmp_path / "run").stages}
    assert done["generate"].pending == 0 and done["generate"].cpu_hours == 0


def test_plan_command_lists_jobs_weights_and_estimates(monkeypatch, capsys, tmp_path, needs_weights):  # noqa: F811
    protocol = write_protocol(tmp_path, methods=[{"name": "needs-weights"}])
    assert run_cli(monkeypatch, "plan", protocol, "--out", tmp_path / "run", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in report["jobs"]] == ["generate/needs-weights/brick/0", "quality/needs-weights/brick/0"]
    assert report["weights"][0]["name"] == "tiny-backbone" and report["weights"][0]["state"] == "missing"
    assert report["weights"][0]["needed_by"] == ["method needs-weights"]
    assert {e["stage"] for e in report["estimate"]} == {"generate", "quality"}

    needs_weights.parent.mkdir(parents=True)
    needs_weights.write_bytes(b"weights")
    assert run_cli(monkeypatch, "plan", protocol, "--out", tmp_path / "run") == 0
    text = capsys.readouterr().out
    assert "generate/needs-weights/brick/0" in text and "found" in text and "GPU-hours" in text


def test_weights_check_command(monkeypatch, capsys, tmp_path, needs_weights):  # noqa: F811
    pretrained = write_protocol(tmp_path, methods=[{"name": "needs-weights"}], weights="pretrained")
    assert run_cli(monkeypatch, "weights", "check", pretrained) == 2
    assert "tiny-backbone" in capsys.readouterr().err
    needs_weights.parent.mkdir(parents=True)
    needs_weights.write_bytes(b"weights")
    assert run_cli(monkeypatch, "weights", "check", pretrained) == 0
    assert "found" in capsys.readouterr().out
    assert run_cli(monkeypatch, "weights", "check", write_protocol(tmp_path)) == 0
    assert "needs no pretrained weights" in capsys.readouterr().out


def test_status_reports_running_jobs_of_a_live_run(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    run_study(parse_protocol(TINY), out=out, report=False)
    store = RunStore(out)
    job = plan_study(parse_protocol(TINY), out).jobs[1]
    (store.path(job) / "DONE.json").unlink()  # as if that job were being redone ...
    store.begin(job)  # ... by a live run that holds the lock
    store.lock()
    try:
        status = run_status(out)
        assert status.live and status.jobs["running"] == [job.id] and status.counts()["done"] == 1
    finally:
        store.unlock()
    assert run_status(out).jobs["pending"] == [job.id]  # nobody works on it any more
    assert run_cli(monkeypatch, "status", out) == 0
    assert "1 done, 0 running, 0 failed, 1 pending" in capsys.readouterr().out
    assert run_cli(monkeypatch, "status", tmp_path) == 2


def test_quiet_run_prints_only_the_summary(monkeypatch, capsys, tmp_path):
    assert run_cli(monkeypatch, "run", write_protocol(tmp_path), "--out", tmp_path / "run", "--quiet") == 0
    captured = capsys.readouterr()
    assert "━" not in captured.err and "GPU-hours" not in captured.err
    assert "ran 2, cached 0, failed 0" in captured.err


def test_paths_from_protocols_cannot_escape_the_run_folder(tmp_path):
    evil = {**TINY, "methods": [{"name": "cutpaste", "variant": "../../../escaped"}, {"name": "crop-paste",
                                                                                     "variant": ".."}]}
    result = run_study(parse_protocol(evil), out=tmp_path / "run", report=False)
    assert result.ok
    inside = (tmp_path / "run").resolve()
    assert all(p.resolve().is_relative_to(inside) for p in (tmp_path / "run").rglob("*"))
    assert not any(p.name == "escaped" for p in tmp_path.iterdir())
    with pytest.raises(UserError, match="outside the run folder"):
        RunStore(tmp_path / "run").path("../../etc")


def _torch_load_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
            yield node


def test_every_torch_load_is_weights_only():
    """Checkpoints are tensors, never pickled code: torch.load(..., weights_only=True) everywhere."""
    offenders = []
    for path in [*(REPO / "acbench").rglob("*.py"), *(REPO / "methods").rglob("*.py")]:
        for call in _torch_load_calls(ast.parse(path.read_text())):
            flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert offenders == []
    # the check itself recognises an unsafe call
    assert list(_torch_load_calls(ast.parse("torch.load(p)")))


def test_protocol_executor_fields(tmp_path):
    proto = load_protocol(write_protocol(tmp_path, executor={"kind": "slurm", "partition": "gpu", "time": "04:00:00",
                                                             "gpus_per_job": 1}))
    assert proto.executor.partition == "gpu" and proto.executor.time == "04:00:00"


def test_run_starts_with_weights_and_estimate(monkeypatch, capsys, tmp_path, needs_weights):  # noqa: F811
    protocol = write_protocol(tmp_path, methods=[{"name": "needs-weights"}])  # pretrained-or-random
    assert run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "run") == 0
    err = capsys.readouterr().err
    assert "weights tiny-backbone (method needs-weights): missing" in err and str(needs_weights) in err
    assert "GPU-hours" in err and err.index("GPU-hours") < err.index("ran 2, cached 0, failed 0")
