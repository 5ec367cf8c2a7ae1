"""supersimplenet-supervised, draem-synthetic and resnet-classifier end to end (cheapest settings)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from acbench.data.demo import DEFECTS
from acbench.data.io import load_rgb
from acbench.detectors.classifier import ResNetClassifier
from acbench.detectors.common import TrainingPool
from acbench.detectors.draem import DraemSynthetic, SyntheticPairAugmenter
from acbench.detectors.supersimplenet import SuperSimpleNetSupervised
from acbench.errors import UserError
from acbench.synthesis import Sample, SyntheticSet, write_synthetic_set

torch.set_num_threads(1)
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def synthetic(brick, tmp_path_factory):
    """Pairs painted by the demo's own defect generators (identical in kind to the test defects)."""
    rng = np.random.default_rng(5)

    def samples():
        for atype in sorted(brick.eval_anomalies):
            for i in range(6):
                image, mask = DEFECTS[atype](load_rgb(brick.normal_train[i]).astype(np.float32) / 255.0, rng)
                yield Sample((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask, atype)

    root = tmp_path_factory.mktemp("syn")
    write_synthetic_set(root, samples(), "brick", "identical-kind", 0)
    return SyntheticSet(root)


def _check_detection_rows(values, n_synthetic):
    rows = {v.metric: v for v in values}
    assert {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"} <= set(rows)
    assert all(0.0 <= v.value <= 1.0 for v in rows.values())
    assert rows["aupro"].extra["n_synthetic"] == n_synthetic
    return rows


def test_supersimplenet_supervised_trains_on_pairs(brick, synthetic, tmp_path):
    detector = SuperSimpleNetSupervised({"epochs": 1, "n_synthetic": 6, "samples_per_epoch": 16}, preset="tiny",
                                        weights="pretrained-or-random")
    rows = _check_detection_rows(detector.run(brick, synthetic, tmp_path, seed=0), 6)
    assert rows["aupro"].extra["weights"] == "random" and rows["aupro"].extra["image_size"] == 128
    assert (tmp_path / "predictions.csv").is_file() and (tmp_path / "anomaly_maps.npz").is_file()
    with pytest.raises(UserError, match="128"):
        SuperSimpleNetSupervised({"image_size": 64}, preset="tiny", weights="random").run(brick, synthetic, tmp_path, 0)


def test_draem_augmenter_pastes_synthetic_regions(brick, synthetic):
    pool = TrainingPool.build(brick, synthetic.records, 32, 0.5)
    torch.manual_seed(0)
    clean = torch.rand(64, 3, 32, 32)
    augmented, mask = SyntheticPairAugmenter(pool, probability=0.5)(clean)
    assert mask.shape == (64, 1, 32, 32)
    has_anomaly = mask.flatten(1).any(dim=1)
    assert 0.25 < has_anomaly.float().mean() < 0.75
    outside = (mask == 0).expand_as(clean)
    assert torch.equal(augmented[outside], clean[outside])  # only the masked region changes
    assert not torch.equal(augmented[has_anomaly], clean[has_anomaly])


def test_draem_synthetic_end_to_end(brick, synthetic, tmp_path):
    detector = DraemSynthetic({"epochs": 1, "n_synthetic": 6, "samples_per_epoch": 8}, preset="tiny")
    rows = _check_detection_rows(detector.run(brick, synthetic, tmp_path, seed=0), 6)
    assert rows["aupro"].extra["weights"] == "from-scratch"
    assert not (tmp_path / "dtd-unused").exists()


def test_resnet_classifier_accuracy_over_all_real_anomalies(brick, synthetic, tmp_path):
    detector = ResNetClassifier({"epochs": 1}, preset="tiny", weights="random")
    values = detector.run(brick, synthetic, tmp_path, seed=0)
    overall = [v for v in values if v.anomaly_type == ""]
    assert len(overall) == 1 and overall[0].metric == "accuracy" and overall[0].scope == "classification"
    with (tmp_path / "predictions.csv").open() as fh:
        predictions = list(csv.DictReader(fh))
    n_test = sum(len(v) for v in brick.eval_anomalies.values())
    assert len(predictions) == n_test
    recomputed = np.mean([p["anomaly_type"] == p["predicted_type"] for p in predictions])
    assert overall[0].value == pytest.approx(recomputed)
    per_type = {v.anomaly_type: v.value for v in values if v.anomaly_type}
    assert set(per_type) == set(brick.eval_anomalies)
    assert overall[0].extra["weights"] == "random"


def test_select_on_test_is_refused_where_not_reproduced(brick, synthetic, tmp_path):
    for cls in (SuperSimpleNetSupervised, DraemSynthetic, ResNetClassifier):
        with pytest.raises(UserError, match="select_on_test"):
            cls({"select_on_test": True}, preset="tiny", weights="random").run(brick, synthetic, tmp_path, 0)
