"""Fractal (FractalAD) and NSA: which pixels may change, seeding, the presets, and the defining arithmetic.

Fractal may change only its mask (the pasted fractal region grown by three 3×3 dilations) under the
official preset. NSA's Poisson blend may change only pixels inside the boxes of its pasted patches,
and not their outermost ring (the clone mask's border is zeroed).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from acbench_methods.classic import fractal, nsa
from scipy import ndimage

from acbench import registry
from acbench.data.io import load_rgb
from acbench.synthesis import GenerationRequest


def _samples(name, options, data, seed=0, count=6, atype="crack"):
    return list(registry.load("methods", name)(options).generate(data, GenerationRequest(atype, count, seed)))


def _source(data, sample):
    return load_rgb(data.root / sample.source_normal, data.image_size)


def _changed(data, sample):
    return np.any(sample.image != _source(data, sample), axis=2)


@pytest.mark.parametrize("name", ["fractal", "nsa"])
def test_mask_non_empty_and_the_image_differs_inside(brick, name):
    for sample in _samples(name, {}, brick):
        changed = _changed(brick, sample)
        assert sample.mask.any() and changed[sample.mask].mean() > 0.3


def test_fractal_official_changes_only_the_mask(brick):
    for sample in _samples("fractal", {}, brick, count=10):
        assert not (_changed(brick, sample) & ~sample.mask).any()


@pytest.mark.parametrize("name", ["fractal", "nsa"])
@pytest.mark.parametrize("preset", ["official", "asbench"])
def test_same_seed_same_pair_other_seed_differs(brick, name, preset):
    def pairs(seed):
        return [(s.image, s.mask) for s in _samples(name, {"preset": preset}, brick, seed=seed, count=3)]

    a, b, c = pairs(0), pairs(0), pairs(1)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))


# --------------------------------------------------------------------------------------------- #
# Fractal


def test_fractal_mask_is_the_pasted_region_dilated_three_times(brick):
    image = brick.normal_image(0)
    for seed in range(20):
        out, mask, pasted = fractal.fractal_anomaly(image, np.random.default_rng(seed), find_object=False)
        assert pasted.any()
        grown = cv2.dilate(pasted.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3).astype(bool)
        assert np.array_equal(mask, grown)
        # grown by exactly 3 px (chessboard distance), independently of OpenCV
        distance = ndimage.distance_transform_cdt(~pasted, metric="chessboard")
        assert np.array_equal(mask, distance <= 3) and distance[mask].max() == 3
        assert not (np.any(out != image, axis=2) & ~mask).any()


def test_ifs_maps_are_contractive_with_the_singular_value_budget():
    for seed in range(50):
        system = fractal.sample_system(2, np.random.default_rng(seed))
        sv = np.linalg.svd(system[:, :, :2], compute_uv=False)
        assert (sv < 1).all()
        assert 3.5 - 1e-9 <= (sv[:, 0] + 2 * sv[:, 1]).sum() <= 4.0 + 1e-9
        assert (np.abs(system[:, :, 2]) <= 1).all()


def test_chaos_game_is_random_iteration_weighted_by_determinant_and_render_fills_the_square():
    """Every point is one of the maps applied to the previous point of its chain (chains start at map
    0's fixed point), maps are used in proportion to |det|, and the stencil is fitted to the square."""
    for seed in range(10):
        rng = np.random.default_rng(seed)
        system = fractal.sample_system(2, rng)
        points = fractal.chaos_game(system, rng)
        assert points.shape == (100_000, 2) and np.isfinite(points).all()
        chains = points.reshape(100, 1000, 2)
        start = np.linalg.solve(np.eye(2) - system[0, :, :2], system[0, :, 2])
        previous = np.concatenate([np.broadcast_to(start, (1, 1000, 2)), chains[:-1]])
        candidates = np.stack([previous @ m[:, :2].T + m[:, 2] for m in system])  # (maps, steps, chains, 2)
        error = np.abs(candidates - chains).max(axis=-1)
        assert error.min(axis=0).max() < 1e-9
        used = error.argmin(axis=0)
        det = np.abs(np.linalg.det(system[:, :, :2]))
        assert abs((used == 0).mean() - det[0] / det.sum()) < 0.01
        stencil = fractal.render(points, 40, rng)
        rows, cols = np.nonzero(stencil)
        assert rows.min() <= 1 and rows.max() >= 38 and cols.min() <= 1 and cols.max() >= 38


def test_object_mask_finds_a_disk_on_a_dark_background():
    image = np.zeros((128, 128, 3), np.uint8)
    cv2.circle(image, (70, 60), 30, (220, 200, 180), -1)
    mask, short = fractal.object_mask(image)
    truth = np.zeros((128, 128), np.uint8)
    cv2.circle(truth, (70, 60), 30, 1, -1)
    assert (mask & truth.astype(bool)).sum() / (mask | truth.astype(bool)).sum() > 0.9
    assert 55 <= short <= 65


def test_fractal_presets_differ_as_documented(brick, monkeypatch):
    """official finds the object for FractalAD's object categories, asbench never; asbench jitters the
    whole anomalous image at the end, so pixels outside the mask change there and only there."""
    calls = []
    real = fractal.object_mask
    monkeypatch.setattr(fractal, "object_mask", lambda image: calls.append(1) or real(image))
    capsule = dataclasses.replace(brick, category="capsule")
    for sample in _samples("fractal", {}, capsule, count=2):  # object finding keeps the official pixel rule
        assert sample.mask.any() and not (_changed(brick, sample) & ~sample.mask).any()
    assert len(calls) >= 2
    calls.clear()
    _samples("fractal", {"preset": "asbench"}, capsule, count=2)
    _samples("fractal", {}, brick, count=2)
    assert not calls
    outside = [(_changed(brick, s) & ~s.mask).mean() for s in _samples("fractal", {"preset": "asbench"}, brick)]
    assert np.mean([o > 0.05 for o in outside]) > 0.5


# --------------------------------------------------------------------------------------------- #
# NSA


def _union(shape, boxes):
    region = np.zeros(shape, bool)
    for y0, y1, x0, x1 in boxes:
        region[y0:y1, x0:x1] = True
    return region


@pytest.mark.parametrize("preset", ["official", "asbench"])
def test_nsa_blend_changes_only_inside_the_patch_boxes_and_not_their_border(brick, preset):
    cfg = nsa.settings_for("brick", preset)
    placed = 0
    for seed in range(20):
        dest, src = brick.normal_image(seed % 24), brick.normal_image((seed + 5) % 24)
        out, mask, boxes = nsa.natural_synthetic_anomaly(dest, src, cfg, np.random.default_rng(seed))
        region = _union(dest.shape[:2], boxes)
        changed = np.any(out != dest, axis=2)
        assert not (changed & ~region).any() and not (mask & ~region).any()
        assert len(boxes) <= cfg.num_patches
        (lo1, hi1), (lo2, hi2) = (np.round(np.array(b) * 128).astype(int) for b in cfg.width_bounds)
        for i, (y0, y1, x0, x1) in enumerate(boxes):
            # the resized patch is clipped to the *half*-width bounds (the official code's quirk)
            assert lo1 - 1 <= y1 - y0 <= hi1 + 1 and lo2 - 1 <= x1 - x0 <= hi2 + 1
            ring = _union(dest.shape[:2], [(y0, y1, x0, x1)]) & ~_union(dest.shape[:2], [(y0 + 1, y1 - 1, x0 + 1,
                                                                                            x1 - 1)])
            ring &= ~_union(dest.shape[:2], boxes[:i] + boxes[i + 1:])
            assert not (changed & ring).any(), "the clone mask's border is zero: the box's outer ring is kept"
        placed += len(boxes)
    assert placed >= 20


def test_nsa_mask_is_the_thresholded_median_filtered_change(brick):
    dest, src = brick.normal_image(0), brick.normal_image(1)
    for seed in range(10):
        out, mask, boxes = nsa.natural_synthetic_anomaly(dest, src, nsa._OBJECT, np.random.default_rng(seed))
        change = np.abs(out.astype(float) - dest).mean(axis=2) * _union(dest.shape[:2], boxes)
        assert np.array_equal(mask, cv2.medianBlur((change > 1).astype(np.uint8), 5).astype(bool))
        logistic = nsa.natural_synthetic_anomaly(dest, src, nsa._OBJECT, np.random.default_rng(seed), "logistic")[1]
        assert not (logistic & ~mask).any() and logistic.sum() < mask.sum()


def test_nsa_presets_differ_as_documented(brick):
    """asbench: the image is its own source and one patch; official: patches of the other image, up to 3."""
    dest = brick.normal_image(0)
    stripes = np.zeros_like(dest)
    stripes[:, ::4] = 255  # a foreign image whose gradients the Poisson blend must carry over
    asb = nsa.settings_for("brick", "asbench")
    off = nsa.settings_for("brick", "official")
    for seed in range(5):
        a = nsa.natural_synthetic_anomaly(dest, stripes, asb, np.random.default_rng(seed))
        b = nsa.natural_synthetic_anomaly(dest, dest, asb, np.random.default_rng(seed))
        assert np.array_equal(a[0], b[0]) and len(a[2]) == 1
    counts = [len(nsa.natural_synthetic_anomaly(dest, stripes, off, np.random.default_rng(s))[2]) for s in range(10)]
    assert max(counts) > 1
    foreign = nsa.natural_synthetic_anomaly(dest, stripes, off, np.random.default_rng(0))[0]
    own = nsa.natural_synthetic_anomaly(dest, dest, off, np.random.default_rng(0))[0]
    assert np.abs(foreign.astype(int) - own).mean() > 1, "the official preset blends in the other image's content"
    assert nsa.settings_for("screw", "official").num_patches == 4
    assert nsa.settings_for("carpet", "official").mode == cv2.MIXED_CLONE
    assert nsa.settings_for("grass", "official").mode == cv2.MIXED_CLONE  # an acbench texture category


def test_nsa_gives_up_on_a_patch_without_object_pixels():
    """With a background colour, a patch must hold enough object: on a plain background image no patch
    can be placed after 200 tries, and the image comes back unchanged with an empty mask."""
    plain = np.full((96, 96, 3), 200, np.uint8)
    out, mask, boxes = nsa.natural_synthetic_anomaly(plain, plain, nsa.MVTEC_SETTINGS["bottle"],
                                                     np.random.default_rng(0))
    assert np.array_equal(out, plain) and not mask.any() and boxes == []
