"""`acbench evaluate detection` on a user's own synthetic set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from acbench.cli import app
from acbench.data.demo import materialise_demo
from acbench.data.mvtec import load_category
from acbench.errors import UserError
from acbench.protocol import SplitConfig
from acbench.synthesis import Sample, write_synthetic_set

ACBENCH = Path(sys.executable).parent / "acbench"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return materialise_demo(seed=0, cache=tmp_path_factory.mktemp("demo-cache"))


@pytest.fixture(scope="module")
def real_pairs_set(demo, tmp_path_factory):
    """A 'synthetic' set made of the real synthesis-split anomalies (what a copy-paste method would see)."""
    data = load_category(demo, "gravel", SplitConfig(), dataset="demo")
    samples = (Sample(e.image(), e.mask(), e.anomaly_type) for ex in data.synthesis.values() for e in ex)
    root = tmp_path_factory.mktemp("syn")
    write_synthetic_set(root, samples, "gravel", "real-copy", 0)
    return root


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "ACBENCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def test_evaluate_detection_json(demo, real_pairs_set, tmp_path):
    result = CliRunner().invoke(app, [
        "evaluate", "detection", "--dataset", str(demo), "--category", "gravel", "--detector",
        "unet-localization", "--synthetic", str(real_pairs_set), "--option", "epochs=1",
        "--option", "synthetic_ratio=0.25", "--device", "cpu", "--out", str(tmp_path / "w"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    metrics = {r["metric"]: r for r in rows}
    assert {"image_auroc", "pixel_auroc", "aupro"} <= set(metrics)
    assert metrics["aupro"]["synthetic_ratio"] == 0.25 and metrics["aupro"]["n_synthetic"] == 9
    assert metrics["aupro"]["method"] == "real-copy" and metrics["aupro"]["selection"] == "last"
    assert (tmp_path / "w" / "predictions.csv").is_file() and (tmp_path / "w" / "anomaly_maps.npz").is_file()


@pytest.mark.parametrize("args, message", [
    (["--detector", "unet-localization"], "--synthetic"),
    (["--detector", "unet-localizaton"], "did you mean 'unet-localization'"),
    (["--detector", "unet-localization", "--option", "synthetic_ratio=2"], "synthetic_ratio"),
    (["--detector", "unet-localization", "--option", "ratio"], "KEY=VALUE"),
    (["--detector", "patchcore", "--preset", "huge"], "--preset"),
])
def test_user_mistakes_are_user_errors(demo, args, message):
    result = CliRunner().invoke(app, ["evaluate", "detection", "--dataset", str(demo), "--category", "gravel",
                                      *args])
    assert isinstance(result.exception, UserError) and message in str(result.exception)


def test_user_error_is_one_line_and_exit_2(demo):
    proc = subprocess.run([str(ACBENCH), "evaluate", "detection", "--dataset", str(demo), "--category", "gravel",
                           "--detector", "unet-localization"], check=False, capture_output=True, text=True,
                          env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--synthetic" in proc.stderr and "Traceback" not in proc.stderr
