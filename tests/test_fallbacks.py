"""Fallbacks are counted where they happen and reach the result rows and the report, never silent."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from engine_helpers import TINY, _Entry

from acbench import registry
from acbench.detectors.common import metric_rows
from acbench.detectors.metrics import PIXEL_METRICS, detection_metrics
from acbench.engine import run_study
from acbench.errors import UserError
from acbench.masks import MaskSourceSpec, get_mask_source
from acbench.masks.base import fallback_counts, reset_fallbacks
from acbench.masks.foreground import estimate_foreground
from acbench.metrics.quality import Fid
from acbench.protocol import parse_protocol
from acbench.report.caveats import caveats
from acbench.report.load import prepare
from acbench.synthesis import Sample, Synthesizer


def test_a_failed_perlin_placement_is_a_counted_fallback_disk(brick):
    never = get_mask_source("perlin", {"threshold": 10.0, "attempts": 2})  # noise never exceeds 10
    reset_fallbacks()
    mask = never.sample(brick, "crack", brick.normal_image(0), np.random.default_rng(0))
    assert mask.any() and mask.mean() < 0.01  # a small disk
    assert fallback_counts() == {"fallback_mask": 1}
    reset_fallbacks()
    get_mask_source("perlin").sample(brick, "crack", brick.normal_image(0), np.random.default_rng(0))
    assert fallback_counts() == {}


def test_real_augmented_with_empty_real_masks_falls_back_and_counts(brick, tmp_path, monkeypatch):
    source = get_mask_source("real-augmented", {"attempts": 3})
    monkeypatch.setattr(type(source), "_real_mask", lambda self, path, shape: np.zeros(shape, bool))
    reset_fallbacks()
    assert source.sample(brick, "crack", brick.normal_image(0), np.random.default_rng(1)).any()
    assert fallback_counts() == {"fallback_mask": 1}


def test_an_untrusted_foreground_estimate_is_counted():
    reset_fallbacks()
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert estimate_foreground(flat, "border").all()
    object_on_background = np.zeros((64, 64, 3), np.uint8)
    object_on_background[16:48, 16:48] = 200
    found = estimate_foreground(object_on_background, "border")
    assert found[32, 32] and not found[2, 2]
    assert estimate_foreground(flat, "whole").all()  # asked for: not a fallback
    assert fallback_counts() == {"whole_image_foreground": 1}


class _PerlinMethod(Synthesizer):
    """Paints black where its mask source says (a protocol chooses the source, as for the real methods)."""

    class Options(Synthesizer.Options):
        mask_source: MaskSourceSpec = MaskSourceSpec(name="perlin")

    def generate(self, data, request):
        source, rng = self.options.mask_source.build(), request.rng()
        for i in range(request.count):
            image = data.normal_image(i).copy()
            mask = source.sample(data, request.anomaly_type, image, rng)
            image[mask] = 0
            yield Sample(image, mask, request.anomaly_type)


@pytest.fixture
def perlin_method(monkeypatch):
    real = registry._entry_points

    def entry_points(kind):
        found = dict(real(kind))
        if kind == "methods":
            found["perlin-painter"] = _Entry("perlin-painter", _PerlinMethod)
        return found

    monkeypatch.setattr(registry, "_entry_points", entry_points)


def test_fallback_masks_reach_the_rows_and_the_report(perlin_method, tmp_path):
    never = {"name": "perlin", "options": {"threshold": 10.0, "attempts": 1}}
    protocol = parse_protocol({**TINY, "report": {"sample_grid": False}, "methods": [
        {"name": "perlin-painter", "variant": "never", "options": {"mask_source": never}},
        {"name": "perlin-painter", "variant": "default"}]})
    result = run_study(protocol, out=tmp_path / "run")
    assert result.ok
    frame = result.results
    per_variant = frame.groupby("variant")["n_fallback_masks"].agg(["min", "max"])
    assert per_variant.loc["never"].tolist() == [6, 6]  # 2 pairs x 3 types, every one a disk
    assert per_variant.loc["default"].tolist() == [0, 0]
    page = (tmp_path / "run" / "report" / "index.md").read_text()
    assert "Caveats" in page and "perlin-painter/never on brick (seed 0): 6" in page
    assert "perlin-painter/default on brick" not in page


def test_a_category_mean_says_how_many_types_it_covers_and_whose_references(monkeypatch):
    metric = Fid(weights="random")
    monkeypatch.setattr(Fid, "features", lambda self, paths: (torch.randn(len(paths), 8), None))
    monkeypatch.setattr(Fid, "weights_column", lambda self: {"weights": "random"})
    generated = {"crack": ["a", "b", "c"], "hole": ["d", "e"], "stain": ["f"]}  # stain: one image, skipped
    rows = [v.row() for v in metric.score_sets(generated, {"crack": ["r1", "r2"], "hole": ["r3", "r4"]})]
    category = next(r for r in rows if r["anomaly_type"] == "")
    assert category["n_types"] == 2 and category["n_types_skipped"] == 1
    assert {r["references"] for r in rows if r["anomaly_type"]} == {"own"}
    assert category["value"] == pytest.approx(np.mean([r["value"] for r in rows if r["anomaly_type"]]))
    # one ungrouped set (a folder of good images, say) serves every type: each row says so
    shared = [v.row() for v in metric.score_sets(generated, {"good": ["r1", "r2", "r3"]})]
    assert {r["references"] for r in shared if r["anomaly_type"]} == {"shared"}
    frame = prepare(pd.DataFrame([{**r, "method": "m", "category": "brick", "seed": 0} for r in rows + shared]))
    notes = dict(caveats(frame))
    assert "fid of m on brick" in notes["one reference set for every type"]
    assert "fid of m on brick: 2 types, 1 skipped" in notes["category mean over fewer types"]


def test_pixel_metrics_of_all_empty_masks_are_nan_rows_marked_omitted():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    maps = np.random.default_rng(0).random((4, 8, 8))
    values = detection_metrics(labels, scores, np.zeros((4, 8, 8), bool), maps)
    assert all(math.isnan(values[m]) for m in PIXEL_METRICS) and values["image_auroc"] == 1.0
    rows = [v.row(method="m", category="c", detector="d", seed=0) for v in metric_rows(values, {})]
    assert {r["metric"] for r in rows if r.get("omitted")} == set(PIXEL_METRICS)
    assert not any(r.get("omitted") for r in rows if r["metric"] == "image_auroc")
    notes = dict(caveats(prepare(pd.DataFrame(rows))))
    assert notes["pixel metrics undefined (ground-truth masks all empty or all full)"] == "d on c"
    assert "pixel_auroc" not in detection_metrics(labels, scores)  # no maps asked: nothing to omit


def test_a_mistyped_explicit_weights_path_is_an_error_not_a_cache_hit(tmp_path, monkeypatch):
    from acbench.weights import resolve_torch_hub_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "net.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert resolve_torch_hub_file("net", "net.pth", None).source == "cache"
    for policy in ("pretrained", "pretrained-or-random"):
        with pytest.raises(UserError, match="net.*typo.pth.*does not exist"):
            resolve_torch_hub_file("net", "net.pth", None, policy, explicit=tmp_path / "typo.pth")
    assert resolve_torch_hub_file("net", "net.pth", None, "random", explicit=tmp_path / "typo.pth").is_random
    # the pre-flight's look-up agrees: a given path that is missing is not replaced by the cached copy
    from acbench.engine.requirements import locate
    from acbench.synthesis import WeightRequirement

    status = locate(WeightRequirement("net", path=str(tmp_path / "typo.pth"), filename="net.pth"))
    assert status.found is False and status.bad_path and status.looked == [str(tmp_path / "typo.pth")]
    assert locate(WeightRequirement("net", filename="net.pth")).found
