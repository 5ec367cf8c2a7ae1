"""patchcore (no-synthesis reference) end to end, and backbone weights resolved from a local cache."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torchvision

from acbench.detectors.backbones import RESNET34, load_backbone, weights_column
from acbench.detectors.patchcore import PatchCore
from acbench.errors import UserError

torch.set_num_threads(1)
pytestmark = pytest.mark.usefixtures("no_network")


def test_patchcore_runs_on_normals_only_and_flags_random_weights(grass, tmp_path, caplog):
    detector = PatchCore({"coreset_sampling_ratio": 0.25}, preset="tiny", weights="pretrained-or-random")
    assert detector.uses_synthetic is False
    rows = {v.metric: v for v in detector.run(grass, None, tmp_path, seed=0)}
    assert "RANDOM WEIGHTS" in caplog.text
    assert set(rows) >= {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"}
    assert all(v.extra["weights"] == "random" for v in rows.values())
    assert all(0.0 <= v.value <= 1.0 for v in rows.values())
    # Even a random-feature memory bank ranks defect pixels above normal ones on these textures.
    assert rows["pixel_auroc"].value > 0.6
    with (tmp_path / "predictions.csv").open() as fh:
        predictions = list(csv.DictReader(fh))
    assert len(predictions) == len(grass.eval_files())
    assert {p["anomaly_type"] for p in predictions} == {"good", *grass.eval_anomalies}
    scores = np.array([float(p["score"]) for p in predictions])
    assert scores.max() > 1.0  # raw distances, not clamped/normalised by a post-processor


def test_patchcore_is_deterministic_per_seed(grass, tmp_path):
    def run(seed):
        detector = PatchCore({"coreset_sampling_ratio": 0.25}, preset="tiny", weights="random")
        return {v.metric: v.value for v in detector.run(grass, None, tmp_path / str(seed), seed=seed)}

    assert run(3) == run(3)
    assert run(4) != run(3)  # the seed reaches the coreset sampling: it is not ignored


def test_pretrained_policy_without_file_is_one_user_error(grass, tmp_path):
    with pytest.raises(UserError, match="wide_resnet50_2-95faca4d.pth"):
        PatchCore({}, preset="tiny", weights="pretrained").run(grass, None, tmp_path, seed=0)


def test_backbone_loads_the_torchvision_file_from_torch_home(tmp_path, monkeypatch):
    torch.manual_seed(5)
    saved = torchvision.models.resnet34(weights=None).state_dict()
    target = tmp_path / "torch-home" / "hub" / "checkpoints" / RESNET34.filename
    target.parent.mkdir(parents=True)
    torch.save(saved, target)
    model, resolution = load_backbone(RESNET34, "pretrained")
    assert resolution.source == "cache" and weights_column(resolution) == "pretrained"
    assert torch.equal(model.state_dict()["layer4.2.conv2.weight"], saved["layer4.2.conv2.weight"])
    _, resolution = load_backbone(RESNET34, "random")
    assert weights_column(resolution) == "random"
