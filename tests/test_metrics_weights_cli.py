"""Weight resolution of the metric networks, the study-side plugins, and `acbench evaluate quality`."""

from __future__ import annotations

import json
import math
import logging

import numpy as np
import pytest
import torch
import torchvision
from typer.testing import CliRunner

from acbench.cli import app
from acbench.data.io import save_png
from acbench.errors import UserError
from acbench.metrics.lpips_features import cached_lpips
from acbench.metrics.quality import IcLpips
from acbench.synthesis import Sample, SyntheticSet, write_synthetic_set
from acbench.weights import LPIPS_BACKBONE_FILES, resolve_fid_inception, resolve_lpips_backbone

torch.set_num_threads(1)


@pytest.fixture()
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ACBENCH_OFFLINE", "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_lpips_backbone_found_in_torch_home_and_loaded(empty_home):
    torch.manual_seed(5)
    trunk = torchvision.models.alexnet().features.state_dict()  # the torchvision layout, `features.` keys
    empty_home.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in trunk.items()}, empty_home / LPIPS_BACKBONE_FILES["alex"])
    model, resolution = cached_lpips("alex", "pretrained", "cpu")
    assert resolution.source == "cache" and resolution.path.endswith("alexnet-owt-7be5be79.pth")
    assert torch.equal(model.net.slice1[0].weight, trunk["0.weight"])
    assert torch.equal(model.net.slice5.get_submodule("10").bias, trunk["10.bias"])


def test_missing_weights_give_one_line_error_naming_the_file(empty_home):
    for resolve in (lambda: resolve_lpips_backbone("vgg"), lambda: resolve_fid_inception("pretrained")):
        with pytest.raises(UserError) as info:
            resolve()
        message = str(info.value)
        assert "\n" not in message and str(empty_home) in message
    assert "vgg16-397923af.pth" in str(pytest.raises(UserError, resolve_lpips_backbone, "vgg").value)
    assert "weights-inception-2015-12-05-6726825d.pth" in str(
        pytest.raises(UserError, resolve_fid_inception, "pretrained").value)


def test_pretrained_or_random_falls_back_loudly(empty_home, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_fid_inception("pretrained-or-random").is_random
    assert "RANDOM WEIGHTS" in caplog.text


def _image(rng, size=32):
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _folders(tmp_path, rng):
    """A SyntheticSet with two types and a reference folder with one sub-folder per type (+ `good`)."""
    samples = [Sample(_image(rng), np.ones((32, 32), bool), t) for t in ("crack", "hole") for _ in range(4)]
    write_synthetic_set(tmp_path / "gen", samples, "demo", "test", 0)
    for t in ("crack", "hole", "good"):
        for i in range(3):
            save_png(tmp_path / "ref" / t / f"{i:03d}.png", _image(rng))
    return tmp_path / "gen", tmp_path / "ref"


def test_ic_lpips_plugin_rows(tmp_path, empty_home):
    gen, ref = _folders(tmp_path, np.random.default_rng(0))
    from acbench.metrics.images import folder_sets

    rows = IcLpips(weights="pretrained-or-random").score_sets(folder_sets(gen), folder_sets(ref))
    by = {(r.metric, r.anomaly_type): r for r in rows}
    assert set(by) == {(m, t) for m in ("ic_lpips", "ic_lpips_nonzero") for t in ("crack", "hole", "")}
    row = by[("ic_lpips", "")]
    assert row.value == pytest.approx((by[("ic_lpips", "crack")].value + by[("ic_lpips", "hole")].value) / 2)
    assert row.extra == {"variant_of_metric": "dfmgan", "weights": "random", "n_generated": 8, "n_reference": 6,
                         "n_types": 2, "n_types_skipped": 0}
    assert by[("ic_lpips", "crack")].extra["references"] == "own"
    assert len(SyntheticSet(gen)) == 8


def test_cli_evaluate_quality_json(tmp_path, empty_home):
    gen, ref = _folders(tmp_path, np.random.default_rng(1))
    result = CliRunner().invoke(app, ["evaluate", "quality", "--generated", str(gen), "--reference", str(ref),
                                      "--metrics", "ic-lpips", "--weights", "random", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["anomaly_type"] for r in rows} == {"crack", "hole", ""}
    assert all(r["weights"] == "random" and r["variant_of_metric"] == "dfmgan" for r in rows)


def test_cli_user_errors_exit_2(tmp_path, empty_home, monkeypatch):
    from acbench import cli

    gen, ref = _folders(tmp_path, np.random.default_rng(2))
    for args in (["--generated", str(tmp_path / "nope"), "--reference", str(ref)],
                 ["--generated", str(gen), "--reference", str(ref), "--metrics", "ic-lpip"],
                 ["--generated", str(gen), "--reference", str(ref), "--metrics", "fid"]):  # no weights file
        monkeypatch.setattr("sys.argv", ["acbench", "evaluate", "quality", *args])
        with pytest.raises(SystemExit) as info:
            cli.main()
        assert info.value.code == 2


def test_required_weights_name_the_exact_files(empty_home):
    from acbench.metrics.quality import Fid, IcLpipsAD

    (lpips_req,) = IcLpipsAD().required_weights()
    (fid_req,) = Fid().required_weights()
    assert lpips_req.filename == "vgg16-397923af.pth" and lpips_req.url.endswith(lpips_req.filename)
    assert fid_req.filename == "weights-inception-2015-12-05-6726825d.pth" and fid_req.url.endswith(fid_req.filename)


def test_study_references_synthesis_split_for_ic_lpips_and_evaluation_split_for_kid(tmp_path, empty_home):
    from acbench.data.category import CategoryData, DefectExample
    from acbench.metrics.quality import IcLpipsAD, Kid

    rng = np.random.default_rng(3)
    gen, ref = _folders(tmp_path, rng)

    def examples(t, names):
        for n in names:
            save_png(tmp_path / "masks" / f"{t}{n}.png", np.ones((32, 32), bool))
        return [DefectExample(ref / t / f"{n}.png", tmp_path / "masks" / f"{t}{n}.png", t) for n in names]

    data = CategoryData("demo", "demo", tmp_path, [], {t: examples(t, ["000"]) for t in ("crack", "hole")},
                        [], {t: examples(t, ["001", "002"]) for t in ("crack", "hole")})
    synthetic = SyntheticSet(gen)
    ad_rows = IcLpipsAD(weights="random").score(synthetic, data)
    assert {(r.anomaly_type, r.extra["n_reference"]) for r in ad_rows} == {("crack", 1), ("hole", 1), ("", 2)}
    assert all(r.extra["variant_of_metric"] == "anomalydiffusion" and r.metric == "ic_lpips_ad" for r in ad_rows)
    kid_rows = Kid(weights="random").score(synthetic, data)
    assert {(r.anomaly_type, r.extra["n_reference"]) for r in kid_rows} == {("crack", 2), ("hole", 2), ("", 4)}
    assert all(r.extra["weights"] == "random" and math.isfinite(r.value) for r in kid_rows)
