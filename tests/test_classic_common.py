"""Shared pieces of the classic methods: Perlin masks, texture folders, ASBench's pre-rotation, DRAEM's augmenter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from acbench_methods.classic.common import AUGMENT_OPS, TextureFolder, asbench_pre_rotate, rand_augment
from PIL import Image

from acbench import registry
from acbench.errors import UserError
from acbench.masks.perlin import perlin_mask, perlin_noise
from acbench.synthesis import GenerationRequest


def test_perlin_mask_is_seeded_thresholded_noise():
    a = perlin_mask((64, 64), np.random.default_rng(3))
    b = perlin_mask((64, 64), np.random.default_rng(3))
    c = perlin_mask((64, 64), np.random.default_rng(4))
    assert a.dtype == bool and a.shape == (64, 64)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    noise = perlin_noise((64, 64), np.random.default_rng(3))
    assert np.array_equal(noise > 0.5, a)
    assert np.array_equal(noise > 0.2, perlin_mask((64, 64), np.random.default_rng(3), threshold=0.2))


def test_perlin_stays_on_the_cpu_when_the_machine_reports_cuda(monkeypatch, brick):
    """On a GPU machine anomalib's noise defaults to CUDA; the classic Perlin paths must not follow it.
    Here CUDA is reported but absent, so any tensor placed on it raises."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert perlin_mask((32, 32), np.random.default_rng(0)).shape == (32, 32)
    method = registry.load("methods", "perlin")({})
    assert len(list(method.generate(brick, GenerationRequest("crack", 2, seed=0)))) == 2


def _write(folder, n, size=(20, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(folder / f"t{i}.jpg")


def test_texture_folder_loads_resized_rgb(tmp_path):
    _write(tmp_path / "dtd" / "images" / "banded", 3)
    folder = TextureFolder(tmp_path / "dtd", "method x: options.texture_path")
    folder.check()
    assert len(folder.files) == 3
    img = folder.load(2, (16, 24))
    assert img.shape == (16, 24, 3) and img.dtype == np.uint8 and abs(int(img[0, 0, 0]) - 80) <= 2
    a = folder.sample(np.random.default_rng(1), (8, 8))
    assert np.array_equal(a, folder.sample(np.random.default_rng(1), (8, 8)))


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable"])
def test_texture_folder_problems_are_one_line_naming_the_option(tmp_path, case):
    path = tmp_path / "dtd"
    if case != "missing":
        path.mkdir()
    if case == "unreadable":
        _write(path, 1)
        (path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError) as err:
        TextureFolder(path, "method x: options.texture_path", "download DTD").check()
    message = str(err.value)
    assert "\n" not in message and "options.texture_path" in message and str(path) in message
    if case == "unreadable":
        assert "broken.png" in message


def test_asbench_pre_rotation_probability_and_black_corners():
    image = np.full((64, 64, 3), 200, np.uint8)
    assert asbench_pre_rotate(image, np.random.default_rng(0), p=0.0) is image
    rotated = [asbench_pre_rotate(image, np.random.default_rng(s), p=1.0) for s in range(5)]
    assert all(r.shape == image.shape and r.dtype == np.uint8 for r in rotated)
    assert all(r[0, 0].max() < 200 and r[32, 32].min() == 200 for r in rotated)  # corners filled, centre kept
    # about 30 % rotated at ASBench's default
    share = np.mean([asbench_pre_rotate(image, np.random.default_rng(s)) is not image for s in range(400)])
    assert 0.22 < share < 0.38


def test_rand_augment_draws_distinct_ops_deterministically(monkeypatch):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = rand_augment(image, np.random.default_rng(5))
    assert np.array_equal(a, rand_augment(image, np.random.default_rng(5)))
    assert a.shape == image.shape and a.dtype == np.uint8 and not np.array_equal(a, image)
    called = []
    for name, op in list(AUGMENT_OPS.items()):
        monkeypatch.setitem(AUGMENT_OPS, name, lambda t, rng, _n=name, _op=op: called.append(_n) or _op(t, rng))
    rand_augment(image, np.random.default_rng(7), n=3)
    assert len(called) == 3 and len(set(called)) == 3
