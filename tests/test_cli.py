"""The command line on the demo dataset: generate, data check, list."""

from __future__ import annotations

import sys

import pytest

from acbench import cli
from acbench.synthesis import SyntheticSet


def _run(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["acbench", *map(str, args)])
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_generate_writes_a_synthetic_set(monkeypatch, tmp_path, demo_root):
    code = _run(monkeypatch, "generate", "cutpaste", "--dataset", demo_root, "--category", "grass",
                "--out", tmp_path / "out", "--per-type", 2, "--options", "{mode: scar}", "--device", "cpu")
    assert code == 0
    synthetic = SyntheticSet(tmp_path / "out")
    assert {k: len(v) for k, v in synthetic.by_type().items()} == {"burn": 2, "contamination": 2, "hole": 2}


@pytest.mark.parametrize("args, message", [
    (["--category", "gras"], "did you mean 'grass'"),
    (["--category", "grass", "--options", "{mode: x}"], "methods[0].options.mode"),
])
def test_generate_user_errors(monkeypatch, capsys, tmp_path, demo_root, args, message):
    code = _run(monkeypatch, "generate", "cutpaste", "--dataset", demo_root, "--out", tmp_path / "o", *args)
    assert code == 2 and message in capsys.readouterr().err


def test_data_check_and_list(monkeypatch, capsys, demo_root, tmp_path):
    assert _run(monkeypatch, "data", "check", demo_root) == 0
    assert _run(monkeypatch, "data", "check", tmp_path / "missing") == 2
    assert _run(monkeypatch, "list", "methods") == 0
    assert "crop-paste" in capsys.readouterr().out
    assert _run(monkeypatch, "list", "protocols") == 0
    assert "demo.yaml" in capsys.readouterr().out
