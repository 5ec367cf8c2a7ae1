"""Protocol validation: every user mistake names its YAML field and exits with code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from acbench.errors import UserError
from acbench.protocol import load_protocol, parse_protocol

BASE = {"name": "t", "dataset": {"kind": "demo"}, "methods": [{"name": "cutpaste"}]}


def _with(**changes):
    return {**BASE, **changes}


def _error(raw) -> str:
    with pytest.raises(UserError) as info:
        parse_protocol(raw, source="p.yaml")
    return str(info.value)


def test_valid_protocol_resolves_plugin_defaults():
    protocol = parse_protocol(_with(methods=[{"name": "cutpaste", "variant": "scar", "options": {"mode": "scar"}}]))
    assert protocol.methods[0].label == "cutpaste/scar"
    assert protocol.methods[0].options["area_ratio"] == [0.02, 0.15]  # the plugin's own default, filled in


@pytest.mark.parametrize(
    "raw, expected",
    [
        (_with(seedz=[1]), "p.yaml: seedz: unknown key"),
        (_with(dataset={"kind": "demo", "split": {"fraction": 1.5}}), "p.yaml: dataset.split.fraction:"),
        (_with(methods=[{"name": "cutpaste", "options": {"mode": "zigzag"}}]), "p.yaml: methods[0].options.mode:"),
        (_with(methods=[{"name": "cutpaste", "options": {"size": 3}}]), "methods[0].options.size: unknown key"),
        (_with(methods=[{"name": "cutpast"}]), "methods[0].name: unknown method 'cutpast' (did you mean 'cutpaste'?)"),
        (_with(metrics=["mask-alignmnt"]), "metrics[0]: unknown metric 'mask-alignmnt' (did you mean"),
        (_with(dataset={"kind": "mvtec"}), "dataset: dataset kind 'mvtec' needs a 'root'"),
        (_with(methods=[{"name": "cutpaste"}, {"name": "cutpaste"}]), "method labels must be unique"),
        ({"dataset": {"kind": "demo"}, "methods": [{"name": "cutpaste"}]}, "p.yaml: name: required field is missing"),
    ],
)
def test_errors_name_the_field(raw, expected):
    assert expected in _error(raw)


def test_env_var_expansion(monkeypatch, tmp_path):
    monkeypatch.setenv("MY_DATA", str(tmp_path))
    protocol = parse_protocol(_with(dataset={"kind": "mvtec", "root": "${MY_DATA}/mvtec"}))
    assert protocol.dataset.root == tmp_path / "mvtec"
    monkeypatch.delenv("MY_DATA")
    assert "environment variable ${MY_DATA} is not set" in _error(_with(dataset={"kind": "mvtec",
                                                                                 "root": "${MY_DATA}"}))


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethods: [cutpaste\n")
    with pytest.raises(UserError, match=r"bad.yaml: line \d+: malformed YAML"):
        load_protocol(bad)


def test_one_third_split_from_0333():
    from acbench.data.split import synthesis_count

    assert [synthesis_count(n, 0.333) for n in (2, 3, 8, 9, 30, 119, 141)] == [0, 1, 2, 3, 10, 39, 47]
    assert synthesis_count(10, 0.5) == 5


def test_cli_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    from acbench import cli

    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\ndataset: {kind: demo}\nmethods: [{name: cutpaste, options: {mode: 3}}]\n")
    monkeypatch.setattr(sys, "argv", ["acbench", "run", str(bad)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "methods[0].options.mode" in err and "Traceback" not in err


def test_shipped_demo_protocol_validates():
    root = Path(__file__).resolve().parent.parent
    protocol = load_protocol(root / "protocols" / "demo.yaml")  # through the registry (parse_protocol)
    assert protocol.dataset.kind == "demo"
    assert protocol.methods and protocol.detectors and protocol.metrics
    assert all("mask_source" in m.options for m in protocol.methods if m.name == "anomalydiffusion")  # defaults
