"""Classic methods: masks cover exactly the changed pixels, and the same seed gives the same bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from acbench import registry
from acbench.data.io import load_rgb
from acbench.synthesis import GenerationRequest, SyntheticSet, write_synthetic_set

CASES = [("cutpaste", {"mode": "patch"}), ("cutpaste", {"mode": "scar"}), ("perlin", {}),
         ("perlin", {"texture_source": "noise"}), ("crop-paste", {}), ("crop-paste", {"placement": "random"})]


def _samples(name, options, data, seed=0, count=6, atype="crack"):
    method = registry.load("methods", name)(options)
    return list(method.generate(data, GenerationRequest(atype, count, seed)))


@pytest.mark.parametrize("name, options", CASES)
def test_mask_covers_exactly_the_changed_pixels(brick, name, options):
    samples = _samples(name, options, brick)
    assert len(samples) == 6
    for sample in samples:
        source = load_rgb(brick.root / sample.source_normal)
        changed = np.any(sample.image != source, axis=2)
        assert sample.mask.any(), "empty mask"
        assert not (changed & ~sample.mask).any(), "pixels changed outside the mask"
        # the defect is visible: most of the mask differs from the normal image
        assert changed[sample.mask].mean() > 0.3
        assert sample.anomaly_type == "crack"


@pytest.mark.parametrize("name, options", CASES)
def test_same_seed_same_bytes_other_seed_differs(tmp_path, brick, name, options):
    def digest(seed, folder):
        write_synthetic_set(tmp_path / folder, _samples(name, options, brick, seed=seed, count=3), "brick", name, seed)
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted((tmp_path / folder).rglob("*.*")))).hexdigest()

    assert digest(0, "a") == digest(0, "b")
    assert digest(0, "a") != digest(1, "c")


def test_synthetic_set_round_trip(tmp_path, brick):
    samples = _samples("cutpaste", {}, brick, count=4) + _samples("cutpaste", {}, brick, count=2, atype="hole")
    assert write_synthetic_set(tmp_path, samples, "brick", "cutpaste", 0) == 6
    synthetic = SyntheticSet(tmp_path)
    assert {k: len(v) for k, v in synthetic.by_type().items()} == {"crack": 4, "hole": 2}
    image, mask = synthetic.records[0].load()
    np.testing.assert_array_equal(image, samples[0].image)
    np.testing.assert_array_equal(mask, samples[0].mask)


def test_crop_paste_uses_real_defect_pixels(brick):
    """The pasted pixels come from the real defects of that type, not from the normal image."""
    sample = _samples("crop-paste", {"rotation": 0, "scale": [1.0, 1.0], "feather": 0}, brick, count=1)[0]
    defects = [e.image()[e.mask()] for e in brick.synthesis["crack"]]
    pasted = sample.image[sample.mask]
    best = max(np.isin(pasted.view([("", pasted.dtype)] * 3), d.view([("", d.dtype)] * 3)).mean() for d in defects)
    assert best > 0.5
