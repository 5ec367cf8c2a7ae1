"""CutOut and FPI: which pixels may change, seeding, the presets, and each method's defining arithmetic.

CutOut may change only the hole (set to 0). FPI (official) may change only its square patch, where the
output is α·normal + (1 - α)·foreign; ASBench's "FPI" only its disk, shifted by one constant and
wrapped to uint8.
"""

from __future__ import annotations

import numpy as np
import pytest
from acbench_methods.classic.common import uint8_wrap
from acbench_methods.classic.cutout import cutout
from acbench_methods.classic.fpi import intensity_disk, interpolate_patch

from acbench import registry
from acbench.data.io import load_rgb
from acbench.synthesis import GenerationRequest


def _samples(name, options, data, seed=0, count=6, atype="crack"):
    return list(registry.load("methods", name)(options).generate(data, GenerationRequest(atype, count, seed)))


def _source(data, sample):
    return load_rgb(data.root / sample.source_normal, data.image_size)


@pytest.mark.parametrize("name", ["cutout", "fpi"])
def test_official_changes_only_the_mask_and_is_visible(brick, name):
    for sample in _samples(name, {}, brick, count=8):
        source = _source(brick, sample)
        changed = np.any(sample.image != source, axis=2)
        assert sample.mask.any()
        assert not (changed & ~sample.mask).any(), "a pixel outside the mask changed"
        assert changed[sample.mask].mean() > 0.5


@pytest.mark.parametrize("name", ["cutout", "fpi"])
@pytest.mark.parametrize("preset", ["official", "asbench"])
def test_same_seed_same_pair_other_seed_differs(brick, name, preset):
    def pairs(seed):
        return [(s.image, s.mask) for s in _samples(name, {"preset": preset}, brick, seed=seed, count=3)]

    a, b, c = pairs(0), pairs(0), pairs(1)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_cutout_hole_is_a_black_square_of_the_drawn_side():
    image = np.full((256, 256, 3), 180, np.uint8)
    sides = []
    for seed in range(300):
        out, mask = cutout(image, np.random.default_rng(seed), (20, 50))
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        assert mask[y0:y1, x0:x1].all() and mask.sum() == (y1 - y0) * (x1 - x0), "the hole is an axis-aligned box"
        assert (out[mask] == 0).all() and (out[~mask] == 180).all(), "constant black inside, untouched outside"
        if 0 < y0 and y1 < 256 and 0 < x0 and x1 < 256:  # not clipped by the border: a square of side 2·(L//2)
            assert y1 - y0 == x1 - x0 and (y1 - y0) % 2 == 0 and 20 <= y1 - y0 <= 50
            sides.append(y1 - y0)
    assert min(sides) <= 24 and max(sides) >= 46  # L ~ U{20..50} covers its range


def test_cutout_asbench_preset_rotates_some_normals_first(brick):
    """asbench: ~30 % of the normal images are rotated before the hole, so pixels outside it change."""
    outside = [np.any((s.image != _source(brick, s)).any(axis=2) & ~s.mask)
               for s in _samples("cutout", {"preset": "asbench"}, brick, count=30)]
    assert 0 < sum(outside) < 30
    assert not any(np.any((s.image != _source(brick, s)).any(axis=2) & ~s.mask)
                   for s in _samples("cutout", {}, brick, count=30))


def test_fpi_is_an_interpolation_between_two_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for seed in range(50):
        out, mask, alpha, (y0, y1, x0, x1) = interpolate_patch(a, b, np.random.default_rng(seed))
        assert 0.05 <= alpha <= 0.95
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        assert 0.1 * 256 - 1 <= cy < 0.9 * 256 + 1 and 0.1 * 256 - 1 <= cx < 0.9 * 256 + 1
        expected = np.round(alpha * a[y0:y1, x0:x1] + (1 - alpha) * b[y0:y1, x0:x1].astype(float))
        assert np.array_equal(out[y0:y1, x0:x1], expected.astype(np.uint8))
        outside = np.ones((256, 256), bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(out[outside], a[outside])
        assert np.array_equal(mask, ~outside & np.any(a != b, axis=2)), "mask = patch where the images differ"


def test_fpi_alpha_is_recoverable_from_the_generated_pair(brick):
    """Each pair is explained by one α and one other normal image of the category: (out - b) = α·(a - b)."""
    normals = [brick.normal_image(i).astype(float) for i in range(len(brick.normal_train))]
    for sample in _samples("fpi", {}, brick, count=4):
        a = _source(brick, sample).astype(float)
        m = sample.mask
        fits = []
        for b in normals:
            d = (a - b)[m]
            if np.abs(d).sum() == 0:
                continue
            alpha = float(((sample.image.astype(float) - b)[m] * d).sum() / (d * d).sum())
            residual = np.abs(np.round(alpha * a[m] + (1 - alpha) * b[m]) - sample.image[m]).max()
            fits.append((residual, alpha))
        residual, alpha = min(fits)
        assert residual <= 1 and 0.05 <= alpha <= 0.95


def test_asbench_fpi_is_a_constant_wrapped_offset_in_a_disk():
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    radii = []
    for seed in range(40):
        out, mask, offset = intensity_disk(image, np.random.default_rng(seed))
        assert 0.2 * 255 <= abs(offset) <= 0.3 * 255
        assert np.array_equal(out[mask], uint8_wrap(image[mask] + offset)) and np.array_equal(out[~mask], image[~mask])
        ys, xs = np.nonzero(mask)
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        r = (ys.max() - ys.min() + 2) // 2
        yy, xx = np.ogrid[:256, :256]
        assert np.array_equal(mask, np.hypot(yy - cy, xx - cx) < r), "the mask is a disk"
        assert 64 <= cy < 192 and 64 <= cx < 192
        radii.append(r)
    assert min(radii) >= 13 and max(radii) <= 25


def test_fpi_presets_differ_as_documented(brick):
    """official: a rectangle of a foreign image; asbench: a disk of one wrapped constant offset."""
    def fill(mask):  # share of the mask's bounding box it covers
        ys, xs = np.nonzero(mask)
        return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].mean()

    for sample in _samples("fpi", {}, brick, count=4):
        assert fill(sample.mask) > 0.88  # a square patch, less the pixels where both images agree
    # asbench: a disk (the corners of its bounding box are outside it)
    for sample in _samples("fpi", {"preset": "asbench"}, brick, count=12):
        ys, xs = np.nonzero(sample.mask)
        assert not sample.mask[[ys.min(), ys.min(), ys.max(), ys.max()], [xs.min(), xs.max(), xs.min(), xs.max()]].any()
        source = _source(brick, sample)
        if np.any((sample.image != source).any(axis=2) & ~sample.mask):
            continue  # the normal image was pre-rotated
        delta = (sample.image[sample.mask].astype(int) - source[sample.mask]) % 256
        assert len(np.unique(delta)) <= 2, "one constant offset (±1 from truncation) inside the disk"


def test_fpi_needs_a_second_normal_image(brick):
    import dataclasses

    from acbench.errors import UserError

    single = dataclasses.replace(brick, normal_train=brick.normal_train[:1])
    with pytest.raises(UserError, match="single normal training image"):
        _samples("fpi", {}, single, count=1)
    assert len(_samples("fpi", {"preset": "asbench"}, single, count=1)) == 1
