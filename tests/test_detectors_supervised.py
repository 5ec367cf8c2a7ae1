"""supersimplenet-supervised, draem-synthetic and resnet-classifier end to end (cheapest settings)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from detector_helpers import check_saved_outputs

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


def _identical_kind(brick, root, empty_masks: bool) -> SyntheticSet:
    """Pairs painted by the demo's own defect generators (identical in kind to the test defects);
    `empty_masks` keeps the very same images and drops every mask."""
    rng = np.random.default_rng(5)

    def samples():
        for atype in sorted(brick.eval_anomalies):
            for i in range(6):
                image, mask = DEFECTS[atype](load_rgb(brick.normal_train[i]).astype(np.float32) / 255.0, rng)
                mask = np.zeros_like(mask) if empty_masks else mask
                yield Sample((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask, atype)

    write_synthetic_set(root, samples(), "brick", "identical-kind", 0)
    return SyntheticSet(root)


@pytest.fixture(scope="module")
def synthetic(brick, tmp_path_factory):
    return _identical_kind(brick, tmp_path_factory.mktemp("syn"), empty_masks=False)


@pytest.fixture(scope="module")
def empty_synthetic(brick, tmp_path_factory):
    return _identical_kind(brick, tmp_path_factory.mktemp("syn-empty"), empty_masks=True)


def _values(rows) -> dict[str, float]:
    return {name: row.value for name, row in rows.items()}


def _check_detection_rows(values, n_synthetic):
    rows = {v.metric: v for v in values}
    assert {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"} <= set(rows)
    assert all(0.0 <= v.value <= 1.0 for v in rows.values())
    assert rows["aupro"].extra["n_synthetic"] == n_synthetic
    return rows


def test_supersimplenet_supervised_trains_on_pairs(brick, synthetic, empty_synthetic, tmp_path, monkeypatch):
    from anomalib.models import Supersimplenet

    seen: list[int] = []  # anomalous mask pixels of every training batch the model is given
    original = Supersimplenet.training_step

    def spy(self, batch, *args, **kwargs):
        seen.append(int(batch.gt_mask.sum()))
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(Supersimplenet, "training_step", spy)

    def run(pairs, name):
        detector = SuperSimpleNetSupervised({"epochs": 1, "n_synthetic": 6, "samples_per_epoch": 16},
                                            preset="tiny", weights="pretrained-or-random")
        return _check_detection_rows(detector.run(brick, pairs, tmp_path / name, seed=0), 6)

    rows = run(synthetic, "real")
    assert seen and sum(seen) > 0  # the synthetic masks reach the supervised loss
    check_saved_outputs(tmp_path / "real", brick, rows, 128)
    seen.clear()
    empty = run(empty_synthetic, "empty")
    assert seen and sum(seen) == 0
    assert _values(rows) != _values(empty)  # same images, seed and schedule: only the masks differ
    assert rows["aupro"].extra["weights"] == "random" and rows["aupro"].extra["image_size"] == 128
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


def test_draem_synthetic_end_to_end(brick, synthetic, empty_synthetic, tmp_path, monkeypatch):
    pasted: list[int] = []  # anomalous pixels the augmenter produced for each training batch
    original = SyntheticPairAugmenter.forward

    def spy(self, image):
        augmented, mask = original(self, image)
        pasted.append(int(mask.sum()))
        return augmented, mask

    monkeypatch.setattr(SyntheticPairAugmenter, "forward", spy)

    def run(pairs, name):
        detector = DraemSynthetic({"epochs": 1, "n_synthetic": 6, "samples_per_epoch": 8}, preset="tiny")
        return _check_detection_rows(detector.run(brick, pairs, tmp_path / name, seed=0), 6)

    rows = run(synthetic, "real")
    assert pasted and sum(pasted) > 0  # DRAEM's own Perlin generator was replaced by the pairs
    check_saved_outputs(tmp_path / "real", brick, rows, 64)
    pasted.clear()
    empty = run(empty_synthetic, "empty")
    assert pasted and sum(pasted) == 0
    assert _values(rows) != _values(empty)
    assert rows["aupro"].extra["weights"] == "from-scratch"


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
