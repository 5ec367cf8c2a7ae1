"""unet-localization end to end on the demo set (tiny preset), and the data plumbing it rests on."""

from __future__ import annotations

import csv
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ACBENCH_OFFLINE", "1")

import numpy as np
import pytest
import torch
from detector_helpers import check_saved_outputs

from acbench.data.demo import DEFECTS
from acbench.data.io import load_rgb
from acbench.data.mvtec import load_category
from acbench.detectors.common import TrainingPool, load_eval_set, select_pairs
from acbench.detectors.unet import UnetLocalization, pool_kernel
from acbench.errors import UserError
from acbench.protocol import SplitConfig
from acbench.synthesis import Sample, SyntheticSet, write_synthetic_set

torch.set_num_threads(1)
pytestmark = pytest.mark.usefixtures("no_network")


def identical_kind_set(data, root, empty_masks: bool, per_type: int = 8):
    """Synthetic pairs painted by the demo's own defect generators on training normals: anomalies
    identical in kind to the test defects. `empty_masks` keeps the images but drops every mask."""
    rng = np.random.default_rng(123)

    def samples():
        for atype in sorted(data.eval_anomalies):
            for i in range(per_type):
                normal = data.normal_train[(5 * i + len(atype)) % len(data.normal_train)]
                image, mask = DEFECTS[atype](load_rgb(normal).astype(np.float32) / 255.0, rng)
                mask = np.zeros_like(mask) if empty_masks else mask
                yield Sample((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask, atype, normal.name)

    write_synthetic_set(root, samples(), data.category, "identical-kind", 0)
    return SyntheticSet(root)


def _rows(values):
    return {v.metric: v for v in values}


@pytest.fixture(scope="module")
def trained(brick, tmp_path_factory):
    """The sanity pair: the same images with real masks vs with empty masks, same seed and schedule."""
    base = tmp_path_factory.mktemp("unet")
    out = {}
    for name, empty in (("real", False), ("empty", True)):
        synthetic = identical_kind_set(brick, base / f"syn-{name}", empty)
        detector = UnetLocalization({"n_synthetic": 18}, preset="tiny", device="cpu")
        out[name] = (_rows(detector.run(brick, synthetic, base / f"work-{name}", seed=0)), base / f"work-{name}")
    return out


def test_identical_kind_anomalies_beat_empty_masks(trained):
    real, empty = trained["real"][0], trained["empty"][0]
    assert real["pixel_auroc"].value > empty["pixel_auroc"].value + 0.15
    assert real["pixel_ap"].value > empty["pixel_ap"].value + 0.1
    assert real["aupro"].value > empty["aupro"].value
    assert real["image_auroc"].value > empty["image_auroc"].value
    assert real["pixel_auroc"].value > 0.85


def test_rows_carry_the_protocol_columns(trained):
    rows = trained["real"][0]
    assert set(rows) == {"image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max",
                         "aupro"}
    extra = rows["pixel_auroc"].extra
    assert extra["synthetic_ratio"] == 0.5 and extra["n_synthetic"] == 18
    assert extra["selection"] == "last" and extra["weights"] == "from-scratch"
    assert rows["image_auroc"].scope == "image" and rows["aupro"].scope == "pixel"


def test_raw_outputs_recompute_the_metrics_and_never_hold_synthesis_images(trained, brick):
    rows, workdir = trained["real"]
    check_saved_outputs(workdir, brick, rows, 64)
    with (workdir / "predictions.csv").open() as fh:
        predictions = list(csv.DictReader(fh))
    files = [brick.root / p["file"] for p in predictions]
    assert sorted(files) == sorted(brick.eval_files())
    synthesis = {p.resolve() for p in brick.synthesis_files()}
    assert synthesis and not synthesis & {f.resolve() for f in files}
    saved = np.load(workdir / "anomaly_maps.npz")
    assert saved["maps"].shape == (len(files), 64, 64)


def test_select_on_test_reports_the_best_epoch_and_marks_rows(brick, tmp_path, monkeypatch):
    from acbench.detectors import unet
    from acbench.detectors.metrics import detection_metrics

    per_epoch = []  # the test-set metrics of every epoch, computed here from the maps the selection saw
    original = unet.predict

    def spy(model, images, device):
        maps, scores = original(model, images, device)
        evalset = load_eval_set(brick, 64)
        per_epoch.append(detection_metrics(evalset.labels, scores, evalset.masks.numpy(), maps))
        return maps, scores

    monkeypatch.setattr(unet, "predict", spy)
    synthetic = identical_kind_set(brick, tmp_path / "syn", False, per_type=3)
    detector = UnetLocalization({"select_on_test": True, "epochs": 3, "synthetic_ratio": 0.25}, preset="tiny")
    rows = _rows(detector.run(brick, synthetic, tmp_path / "work", seed=1))
    assert len(per_epoch) == 3  # one evaluation per epoch, none after the last
    totals = [m["image_auroc"] + m["pixel_auroc"] + m["pixel_ap"] + m["aupro"] for m in per_epoch]
    best = int(np.argmax(totals))
    assert rows["aupro"].extra["selection"] == "test" and rows["aupro"].extra["best_epoch"] == best + 1
    assert {k: r.value for k, r in rows.items()} == pytest.approx(per_epoch[best], abs=1e-9)
    assert rows["aupro"].extra["synthetic_ratio"] == 0.25 and rows["aupro"].extra["n_synthetic"] == 9


def test_overlapping_split_is_refused(demo_root, tmp_path):
    legacy = load_category(demo_root, "brick", SplitConfig(legacy_overlap=True), dataset="demo")
    with pytest.raises(UserError, match="legacy_overlap"):
        load_eval_set(legacy, 32)


def test_training_pool_draws_the_asked_share(brick, tmp_path):
    synthetic = identical_kind_set(brick, tmp_path / "syn", False, per_type=2)
    for ratio in (0.1, 0.5):
        pool = TrainingPool.build(brick, synthetic.records, 32, ratio)
        _, masks = pool.batch(2000, np.random.default_rng(0))
        share = masks.flatten(1).any(dim=1).float().mean().item()
        assert share == pytest.approx(ratio, abs=0.04)


def test_select_pairs_balances_types(brick, tmp_path):
    synthetic = identical_kind_set(brick, tmp_path / "syn", False, per_type=4)
    chosen = select_pairs(synthetic.records, 6, seed=0)
    types = [r.anomaly_type for r in chosen]
    assert len(chosen) == 6 and all(types.count(t) == 2 for t in set(types))
    assert select_pairs(synthetic.records, 6, seed=0) == chosen
    assert len(select_pairs(synthetic.records, None, seed=0)) == len(synthetic)


def test_pool_kernel_follows_draem_at_256():
    assert pool_kernel(256) == 21 and pool_kernel(64) % 2 == 1


def test_unknown_preset_and_missing_set_are_user_errors(brick, tmp_path):
    with pytest.raises(UserError, match="preset"):
        UnetLocalization({}, preset="huge").run(brick, None, tmp_path, 0)
    with pytest.raises(UserError, match="synthetic set"):
        UnetLocalization({}, preset="tiny").run(brick, None, tmp_path, 0)



def test_the_demo_preset_computes_single_threaded_under_any_job_thread_count(brick, tmp_path, monkeypatch):
    """A job with 2 threads trains and scores the demo preset with 1 (its numbers are chaotic in the last
    bit: another reduction order is another result), gives the 1-thread job's values exactly, and leaves
    the job's thread count as it found it; the tiny preset computes with the job's threads."""
    from acbench.detectors import unet

    seen = []  # torch's thread count while the U-Net trains
    original = unet.train_unet

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(unet, "train_unet", spy)
    synthetic = identical_kind_set(brick, tmp_path / "syn", False, per_type=2)
    values = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            detector = UnetLocalization({"epochs": 1, "samples_per_epoch": 16}, preset="demo", device="cpu")
            rows = _rows(detector.run(brick, synthetic, tmp_path / f"demo-{threads}", seed=0))
            values[threads] = {k: r.value for k, r in rows.items()}
            assert torch.get_num_threads() == threads and rows["aupro"].extra["compute_threads"] == 1
        assert values[1] == values[2] and seen == [1, 1]
        detector = UnetLocalization({"epochs": 1, "samples_per_epoch": 8}, preset="tiny", device="cpu")
        rows = _rows(detector.run(brick, synthetic, tmp_path / "tiny", seed=0))
        assert seen[-1] == 2 and "compute_threads" not in rows["aupro"].extra
    finally:
        torch.set_num_threads(1)
