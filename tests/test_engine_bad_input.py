"""Every user mistake through the real CLI: one clear line naming the file or field, exit code 2."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import error_lines, leftovers, needs_weights, run_cli, write_protocol  # noqa: F401
from PIL import Image

from acbench.data import io as data_io


@pytest.fixture
def dataset(tmp_path, demo_root):
    """A writable copy of the demo's brick category, to break in various ways."""
    root = tmp_path / "data"
    shutil.copytree(demo_root / "brick", root / "brick")
    return root


def _mvtec(tmp_path, root, **changes):
    return write_protocol(tmp_path, dataset={"kind": "mvtec", "root": str(root), "categories": ["brick"]},
                          **changes)


def _fails_with(monkeypatch, capsys, protocol, tmp_path, *needles, extra=()):
    code = run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "run", "--quiet", *extra)
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_malformed_yaml_exits_2_in_a_real_process(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nmethods: [cutpaste\n")
    proc = subprocess.run([sys.executable, "-c", "from acbench.cli import main; main()", "run", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(error_lines(proc.stderr)) == 1 and "malformed YAML" in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("changes, needles", [
    ({"methods": [{"name": "cutpast"}]}, ["methods[0].name", "did you mean 'cutpaste'"]),
    ({"metrics": ["pair-stat"]}, ["metrics[0]", "did you mean 'pair-stats'"]),
    ({"detectors": [{"name": "patchcor"}]}, ["detectors[0].name", "unknown detector 'patchcor'"]),
    ({"dataset": {"kind": "demo", "categories": ["bricks"]}}, ["'bricks'", "did you mean 'brick'"]),
    ({"dataset": {"kind": "mvtec", "root": "/nonexistent/mvtec"}}, ["/nonexistent/mvtec", "not found"]),
    ({"dataset": {"kind": "mvtec", "root": "${ACBENCH_TEST_UNSET}/mvtec"}}, ["${ACBENCH_TEST_UNSET}", "not set"]),
])
def test_protocol_mistakes(monkeypatch, capsys, tmp_path, changes, needles):
    monkeypatch.delenv("ACBENCH_TEST_UNSET", raising=False)
    _fails_with(monkeypatch, capsys, write_protocol(tmp_path, **changes), tmp_path, *needles)


def test_defect_image_without_mask(monkeypatch, capsys, tmp_path, dataset):
    (dataset / "brick" / "ground_truth" / "crack" / "004_mask.png").unlink()
    _fails_with(monkeypatch, capsys, _mvtec(tmp_path, dataset), tmp_path, "test/crack/004.png", "without mask")


def test_mask_size_differs_from_image(monkeypatch, capsys, tmp_path, dataset):
    mask = dataset / "brick" / "ground_truth" / "hole" / "002_mask.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(mask)
    _fails_with(monkeypatch, capsys, _mvtec(tmp_path, dataset), tmp_path, str(mask), "mask size 40x40")


def test_garbage_png_is_named_before_any_job(monkeypatch, capsys, tmp_path, dataset):
    bad = dataset / "brick" / "train" / "good" / "003.png"
    bad.write_bytes(b"this is not a png")
    _fails_with(monkeypatch, capsys, _mvtec(tmp_path, dataset), tmp_path, str(bad), "corrupt")
    assert not (tmp_path / "run" / "artifacts").exists()


def test_truncated_png_is_named_by_the_job_that_reads_it(monkeypatch, capsys, tmp_path, dataset):
    """A valid header with cut-off pixel data passes the header check and fails when decoded."""
    good = sorted((dataset / "brick" / "train" / "good").iterdir())
    for path in good:
        path.write_bytes(path.read_bytes()[:200])
    line = _fails_with(monkeypatch, capsys, _mvtec(tmp_path, dataset), tmp_path, "corrupt")
    assert any(str(p) in line for p in good)
    assert leftovers(tmp_path / "run") == []


def test_empty_synthetic_set(monkeypatch, capsys, tmp_path):
    from acbench_methods.classic.cutpaste import CutPaste

    monkeypatch.setattr(CutPaste, "generate", lambda self, data, request: iter(()))
    _fails_with(monkeypatch, capsys, write_protocol(tmp_path), tmp_path, "empty synthetic set", "cutpaste/patch")


@pytest.mark.usefixtures("needs_weights")
def test_missing_weights_name_the_weight_and_where_looked(monkeypatch, capsys, tmp_path):
    protocol = write_protocol(tmp_path, methods=[{"name": "needs-weights"}], weights="pretrained")
    line = _fails_with(monkeypatch, capsys, protocol, tmp_path, "'tiny-backbone'", "not found")
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "tiny-backbone.pth") in line


def test_locked_run_folder_and_stale_lock_takeover(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from acbench.engine.store import RunStore
        store = RunStore({str(out)!r})
        store.lock()
        print("locked", flush=True)
        time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = _fails_with(monkeypatch, capsys, write_protocol(tmp_path), tmp_path, "locked by a live run")
        assert f"pid {holder.pid}" in line
    finally:
        holder.kill()  # SIGKILL: the holder leaves its lock file behind, with its pid inside
        holder.wait()
    assert f"pid {holder.pid}" in (out / ".lock").read_text()
    assert run_cli(monkeypatch, "run", write_protocol(tmp_path), "--out", out, "--quiet") == 0


def test_disk_full_while_writing_leaves_nothing_half_written(monkeypatch, capsys, tmp_path):
    real_save = data_io.save_png
    calls = {"n": 0}

    def fills_the_disk(path, array):
        calls["n"] += 1
        if calls["n"] == 3:  # half an image reaches the disk, then no space is left
            with open(path, "wb") as fh:
                fh.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, array)

    monkeypatch.setattr("acbench.synthesis.save_png", fills_the_disk)
    _fails_with(monkeypatch, capsys, write_protocol(tmp_path), tmp_path, "disk full", "free space")
    assert leftovers(tmp_path / "run") == []

    monkeypatch.setattr("acbench.synthesis.save_png", real_save)
    before = (tmp_path / "run" / "results.csv").read_text()  # the failed run's (complete) table

    def full_at_results(tmp):
        tmp.write_text("method,variant\ncutpa")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("acbench.engine.runner.pd.DataFrame.to_csv", lambda self, tmp, **kw: full_at_results(tmp))
    _fails_with(monkeypatch, capsys, write_protocol(tmp_path), tmp_path, "disk full")
    assert leftovers(tmp_path / "run") == []
    assert (tmp_path / "run" / "results.csv").read_text() == before  # the old table, never a half one


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_method_folder_option_checked_before_any_job(monkeypatch, capsys, tmp_path, dataset, make):
    """A plugin's own `check()` runs in the pre-flight: a released folder that is missing or empty stops the
    study with one line naming the option and the folder, and no job artifact is written."""
    folder = tmp_path / "pairs"
    if make == "empty":
        folder.mkdir()
    protocol = _mvtec(tmp_path, dataset, methods=[{"name": "released", "options": {"path": str(folder)}}])
    _fails_with(monkeypatch, capsys, protocol, tmp_path, "options.path", str(folder))
    assert not (tmp_path / "run" / "artifacts").exists()


@pytest.mark.parametrize("case", ["file", "read-only"])
def test_unusable_out_folder_is_one_line(monkeypatch, capsys, tmp_path, case):
    out = tmp_path / "out"
    if case == "file":
        out.write_text("not a folder")
    else:  # as the operating system answers for a read-only parent (also when the tests run as root)
        real_mkdir = Path.mkdir

        def refuse(self, *args, **kwargs):
            if self == out:
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)
    code = run_cli(monkeypatch, "run", write_protocol(tmp_path), "--out", out, "--quiet")
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(out) in lines[0]
    if case == "file":
        assert out.read_text() == "not a folder"


@pytest.mark.usefixtures("needs_weights")
def test_downloadable_weight_that_cannot_be_reached_stops_before_any_job(monkeypatch, capsys, tmp_path):
    """Under `pretrained`, a weight missing locally whose download source does not answer stops the study in
    the pre-flight (one line), instead of failing every job that needs it."""
    from acbench import registry
    from acbench.engine import requirements
    from acbench.synthesis import WeightRequirement

    cls = registry.load("methods", "needs-weights")
    monkeypatch.setattr(cls, "required_weights", lambda self: [WeightRequirement(
        "tiny-backbone", "a backbone checkpoint", filename="tiny-backbone.pth",
        url="https://example.invalid/tiny-backbone.pth")])
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("ACBENCH_OFFLINE", raising=False)
    asked = []
    monkeypatch.setattr(requirements, "reachable", lambda source, timeout=8.0: asked.append(source) or False)
    protocol = write_protocol(tmp_path, methods=[{"name": "needs-weights"}], weights="pretrained")
    line = _fails_with(monkeypatch, capsys, protocol, tmp_path, "'tiny-backbone'", "cannot be reached")
    assert asked == ["https://example.invalid/tiny-backbone.pth"] and "example.invalid" in line
    assert not (tmp_path / "run" / "artifacts").exists()
