"""Mask sources: binary, non-empty, on the product, the requested size, and reproducible by seed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve
from skimage.draw import disk, ellipse

from acbench.data.category import CategoryData
from acbench.data.io import save_png
from acbench.errors import UserError
from acbench.masks import MaskSourceSpec, get_mask_source, mask_source_names
from acbench.masks.foreground import estimate_foreground

def object_image(shape=(96, 80), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A bright noisy ellipse (the product) on a dark noisy background, and its true extent."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, bool)
    truth[ellipse(shape[0] / 2, shape[1] / 2, shape[0] * 0.3, shape[1] * 0.25, shape=shape)] = True
    img = np.where(truth[..., None], [200, 180, 150], [30, 35, 40]) + rng.normal(0, 8, shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8), truth


def as_object_category(data: CategoryData, name: str = "widget") -> CategoryData:
    """The demo category's training masks under an object-category name (not a texture)."""
    return CategoryData(data.dataset, name, data.root, data.normal_train, data.synthesis, data.eval_normal,
                        data.eval_anomalies)


SOURCES = [("real-augmented", {}), ("perlin", {}), ("perlin", {"scale_exponents": (3, 5)})]


def test_registered_sources():
    assert {"real-augmented", "perlin", "folder"} <= set(mask_source_names())
    assert MaskSourceSpec().name == "real-augmented"


@pytest.mark.parametrize("method, shape", [("border", (96, 80)), ("bright", (96, 80)), ("border", (600, 520))])
def test_foreground_estimate_finds_the_object(method, shape):
    img, truth = object_image(shape)
    assert estimate_foreground(img, method).shape == shape
    fg = estimate_foreground(img, method)
    iou = (fg & truth).sum() / (fg | truth).sum()
    assert iou > 0.9
    assert estimate_foreground(img, "dark").mean() > 0.5  # the background is the dark part


def test_texture_categories_use_the_whole_image_and_overrides_apply():
    img, _ = object_image()
    source = get_mask_source("perlin", {})
    assert source.options.foreground_of("carpet", img).all()
    assert not source.options.foreground_of("bottle", img).all()
    override = get_mask_source("perlin", {"foreground_overrides": {"bottle": "whole"}})
    assert override.options.foreground_of("bottle", img).all()


@pytest.mark.parametrize("name, options", SOURCES)
def test_masks_binary_nonempty_on_foreground_requested_size(brick, name, options):
    data = as_object_category(brick)
    source = get_mask_source(name, options)
    rng = np.random.default_rng(0)
    for seed in range(8):
        img, truth = object_image(seed=seed)
        mask = source.sample(data, "crack", img, rng)
        assert mask.dtype == bool and mask.shape == img.shape[:2]
        assert mask.any()
        fg = source.options.foreground_of("widget", img)
        assert not (mask & ~fg).any(), "mask leaves the estimated foreground"
        assert (mask & ~truth).sum() <= 0.02 * mask.sum(), "mask lies off the product"


@pytest.mark.parametrize("name, options", SOURCES)
def test_same_seed_same_masks_other_seed_differs(brick, name, options):
    source = get_mask_source(name, options)
    img = brick.normal_image(0)

    def draw(seed):
        rng = np.random.default_rng(seed)
        return np.stack([source.sample(brick, "hole", img, rng) for _ in range(4)])

    assert np.array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


def test_real_augmented_without_augmentation_is_a_moved_real_mask(brick):
    source = get_mask_source("real-augmented", {"rotation": 0, "scale": (1, 1), "elastic_alpha": 0})
    img = brick.normal_image(0)
    reals = [e.mask().astype(float) for e in brick.synthesis["hole"]]
    for seed in range(4):
        mask = source.sample(brick, "hole", img, np.random.default_rng(seed)).astype(float)
        # the best overlap of a translated real mask with the output, over every shift (FFT correlation);
        # clipping at the image border only removes pixels, so the output is (almost) inside one of them
        overlap = max(fftconvolve(mask, real[::-1, ::-1]).max() for real in reals)
        assert overlap >= 0.95 * mask.sum()
        assert mask.sum() <= 1.05 * max(real.sum() for real in reals)


def test_real_augmented_varies_shape_and_needs_training_masks(brick):
    source = get_mask_source("real-augmented", {})
    img = brick.normal_image(0)
    rng = np.random.default_rng(0)
    areas = {int(source.sample(brick, "stain", img, rng).sum()) for _ in range(6)}
    assert len(areas) == 6
    with pytest.raises(UserError, match="no training mask of type 'dent'"):
        source.sample(brick, "dent", img, rng)


def test_perlin_area_range_is_respected(brick):
    source = get_mask_source("perlin", {"area": (0.05, 0.2)})
    img = brick.normal_image(0)
    rng = np.random.default_rng(3)
    fractions = [source.sample(brick, "crack", img, rng).mean() for _ in range(8)]
    assert all(0.05 <= f <= 0.2 for f in fractions)


def test_folder_matches_masks_by_type(tmp_path, brick):
    square, round_ = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    square[10:30, 10:30] = True
    round_[disk((40, 40), 12)] = True
    save_png(tmp_path / "brick" / "crack" / "0.png", square)
    save_png(tmp_path / "hole" / "a.png", round_)  # single-category layout
    save_png(tmp_path / "hole" / "empty.png", np.zeros((64, 64), bool))
    source = get_mask_source("folder", {"path": str(tmp_path)})
    img = brick.normal_image(0)  # 128 px: masks are resized to the normal image
    rng = np.random.default_rng(0)
    crack = source.sample(brick, "crack", img, rng)
    assert crack.shape == (128, 128) and crack[20:60, 20:60].all() and crack.sum() == 40 * 40
    for _ in range(4):
        hole = source.sample(brick, "hole", img, rng)
        assert hole.any() and not hole[:40, :40].any()
    with pytest.raises(UserError, match="no masks in .*stain"):
        source.sample(brick, "stain", img, rng)
    with pytest.raises(UserError, match="does not exist"):
        get_mask_source("folder", {"path": str(tmp_path / "missing")}).sample(brick, "crack", img, rng)


def test_folder_reads_the_released_mask_subfolder_layout(tmp_path, brick):
    square = np.zeros((64, 64), bool)
    square[10:30, 10:30] = True
    save_png(tmp_path / "brick" / "crack" / "mask" / "000.png", square)  # generated_masks/<cat>/<type>/mask/
    save_png(tmp_path / "brick" / "crack" / "image" / "000.png", ~square)  # a sibling folder: not a mask
    crack = get_mask_source("folder", {"path": str(tmp_path)}).sample(brick, "crack", brick.normal_image(0),
                                                                     np.random.default_rng(0))
    assert crack[20:60, 20:60].all() and crack.sum() == 40 * 40


def test_bad_names_and_options_are_user_errors():
    with pytest.raises(UserError, match="did you mean 'perlin'"):
        get_mask_source("perlinn", {})
    with pytest.raises(UserError, match="scale_exponents"):
        get_mask_source("perlin", {"scale_exponents": (5, 2)})
    with pytest.raises(UserError, match="path"):
        get_mask_source("folder", {})


def test_a_protocol_names_a_bad_mask_source_option():
    from pydantic import BaseModel, ValidationError

    class MethodOptions(BaseModel):
        mask_source: MaskSourceSpec = MaskSourceSpec()

    assert isinstance(MethodOptions().mask_source.build(), get_mask_source("real-augmented").__class__)
    with pytest.raises(ValidationError, match="mask_source.options.rotation of 'real-augmented'"):
        MethodOptions.model_validate({"mask_source": {"name": "real-augmented", "options": {"rotation": 400}}})
