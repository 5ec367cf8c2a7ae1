"""Mask alignment and pair statistics on hand-made pairs whose values are known in advance."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from acbench.metrics.basic import CHANGE_THRESHOLD, MaskAlignment, PairStats, mask_alignment
from acbench.synthesis import Sample, SyntheticSet, write_synthetic_set


def _pair():
    """A 10x10 grey image; the mask is the left half (50 px). 25 mask pixels and 5 outside change by 100."""
    source = np.full((10, 10, 3), 100, np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    generated = source.copy()
    generated[:5, :5] = 200  # 25 pixels inside
    generated[0, 5:10] = 0  # 5 pixels outside
    return generated, source, mask


def test_precision_and_recall_of_a_hand_made_pair():
    generated, source, mask = _pair()
    precision, recall = mask_alignment(generated, source, mask)
    assert precision == pytest.approx(25 / 30)  # change inside / all change (each changed pixel: 100 levels)
    assert recall == pytest.approx(0.5)  # 25 of the 50 mask pixels changed visibly
    # a faint change inside the mask counts for precision, not for recall (below the visibility threshold)
    faint = generated.copy()
    faint[5:, :5] = 100 + int(CHANGE_THRESHOLD * 255) - 1
    p2, r2 = mask_alignment(faint, source, mask)
    assert r2 == pytest.approx(0.5) and p2 > precision
    # the largest channel change counts: a change in one channel only
    one_channel = source.copy()
    one_channel[:5, :5, 2] = 140
    assert mask_alignment(one_channel, source, mask) == pytest.approx((1.0, 0.5))
    assert mask_alignment(source, source, mask) == (1.0, 0.0)  # nothing changed: nothing leaked, nothing painted


def test_the_plugins_on_a_synthetic_set(tmp_path):
    generated, source, mask = _pair()
    root = tmp_path / "data"
    (root / "tile" / "train" / "good").mkdir(parents=True)
    Image.fromarray(source).save(root / "tile" / "train" / "good" / "0.png")
    leak = Sample(generated, mask, "crack", source_normal="tile/train/good/0.png")
    clean = Sample(np.where(mask[..., None], 200, source).astype(np.uint8), mask, "crack",
                   source_normal="tile/train/good/0.png")
    unknown = Sample(generated, mask, "hole")  # no source normal: cannot be aligned
    write_synthetic_set(tmp_path / "set", [leak, clean, unknown], "tile", "m", 0)
    data = type("Data", (), {"root": root})()
    rows = {(v.metric, v.anomaly_type): v for v in MaskAlignment().score(SyntheticSet(tmp_path / "set"), data)}
    assert rows[("mask_precision", "crack")].value == pytest.approx((25 / 30 + 1.0) / 2)
    assert rows[("mask_recall", "crack")].value == pytest.approx((0.5 + 1.0) / 2)
    assert ("mask_precision", "hole") not in rows
    category = rows[("mask_precision", "")]
    assert category.extra == {"n_types": 1, "n_types_skipped": 1}  # hole left out, and said so
    stats = {(v.metric, v.anomaly_type): v.value for v in PairStats().score(SyntheticSet(tmp_path / "set"), data)}
    assert stats[("n_pairs", "crack")] == 2 and stats[("n_pairs", "")] == 3
    assert stats[("mask_area", "crack")] == pytest.approx(0.5)
