"""The command line on the demo dataset: generate, data check, list."""

from __future__ import annotations

import pytest

from acbench.synthesis import SyntheticSet
from engine_helpers import run_cli


def test_generate_writes_a_synthetic_set(monkeypatch, tmp_path, demo_root):
    code = run_cli(monkeypatch, "generate", "cutpaste", "--dataset", demo_root, "--category", "grass",
                "--out", tmp_path / "out", "--per-type", 2, "--options", "{mode: scar}", "--device", "cpu")
    assert code == 0
    synthetic = SyntheticSet(tmp_path / "out")
    assert {k: len(v) for k, v in synthetic.by_type().items()} == {"burn": 2, "contamination": 2, "hole": 2}


@pytest.mark.parametrize("args, message", [
    (["--category", "gras"], "did you mean 'grass'"),
    (["--category", "grass", "--options", "{mode: x}"], "methods[0].options.mode"),
])
def test_generate_user_errors(monkeypatch, capsys, tmp_path, demo_root, args, message):
    code = run_cli(monkeypatch, "generate", "cutpaste", "--dataset", demo_root, "--out", tmp_path / "o", *args)
    assert code == 2 and message in capsys.readouterr().err


def test_data_check_and_list(monkeypatch, capsys, demo_root, tmp_path):
    assert run_cli(monkeypatch, "data", "check", demo_root) == 0
    assert run_cli(monkeypatch, "data", "check", tmp_path / "missing") == 2
    assert run_cli(monkeypatch, "list", "methods") == 0
    assert "crop-paste" in capsys.readouterr().out
    assert run_cli(monkeypatch, "list", "protocols") == 0
    assert "demo.yaml" in capsys.readouterr().out


def test_console_shows_each_warning_once_and_counts_repeats():
    import logging

    from acbench import console_log

    stream = __import__("io").StringIO()
    handler = logging.StreamHandler(stream)
    filt = console_log.OncePerMessage()
    handler.addFilter(filt)
    logger = logging.getLogger("acbench.test_once")
    logger.addHandler(handler)
    try:
        for _ in range(12):
            logger.warning("RANDOM WEIGHTS for %s", "fid-inception-v3")
        logger.warning("RANDOM WEIGHTS for %s", "lpips-alex")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == ["RANDOM WEIGHTS for fid-inception-v3", "RANDOM WEIGHTS for lpips-alex"]
    assert filt.repeated() == [("RANDOM WEIGHTS for fid-inception-v3", 12)]


def test_plugin_descriptions_read_from_source_equal_the_classes():
    """`acbench list` reads descriptions without importing plugins; they must be the classes' own."""
    from acbench import registry

    for kind in registry.KINDS:
        for name in registry.names(kind):
            expected = getattr(registry.load(kind, name), "description", "")
            assert registry.describe(kind, name) == expected, (kind, name)


def test_listing_methods_imports_no_network_library():
    import subprocess
    import sys

    code = ("import sys\nfrom acbench.cli import main\nsys.argv = ['acbench', 'list', 'methods']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('diffusers', 'transformers', 'anomalib', 'lpips') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "HEAVY []" in out, out
    assert "anomalycontrol" in out and "cutpaste" in out
