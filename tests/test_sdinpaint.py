"""`sd-inpaint`: exact pixels outside the mask, the prompt template, rejection, presets reaching the pipeline."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from acbench import registry
from acbench.errors import UserError
from acbench.protocol import parse_protocol
from acbench.synthesis import GenerationRequest
from acbench_methods.sdinpaint.plugin import mean_change, paint_with_rejection
from acbench_methods.sdinpaint.presets import DIAG_NEGATIVE, render_prompt

# Every defect type of MVTec AD (the folder names under <category>/test/, without `good`).
MVTEC_AD_TYPES = {
    "bottle": ["broken_large", "broken_small", "contamination"],
    "cable": ["bent_wire", "cable_swap", "combined", "cut_inner_insulation", "cut_outer_insulation",
              "missing_cable", "missing_wire", "poke_insulation"],
    "capsule": ["crack", "faulty_imprint", "poke", "scratch", "squeeze"],
    "carpet": ["color", "cut", "hole", "metal_contamination", "thread"],
    "grid": ["bent", "broken", "glue", "metal_contamination", "thread"],
    "hazelnut": ["crack", "cut", "hole", "print"],
    "leather": ["color", "cut", "fold", "glue", "poke"],
    "metal_nut": ["bent", "color", "flip", "scratch"],
    "pill": ["color", "combined", "contamination", "crack", "faulty_imprint", "pill_type", "scratch"],
    "screw": ["manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"],
    "tile": ["crack", "glue_strip", "gray_stroke", "oil", "rough"],
    "toothbrush": ["defective"],
    "transistor": ["bent_lead", "cut_lead", "damaged_case", "misplaced"],
    "wood": ["color", "combined", "hole", "liquid", "scratch"],
    "zipper": ["broken_teeth", "combined", "fabric_border", "fabric_interior", "rough", "split_teeth",
               "squeezed_teeth"],
}


def sd_inpaint(**options):
    return registry.load("methods", "sd-inpaint")({"preset": "tiny", "batch_size": 3, **options})


def normal_of(data, sample) -> np.ndarray:
    names = [p.relative_to(data.root).as_posix() for p in data.normal_train]
    return data.normal_image(names.index(sample.source_normal))


# ------------------------------------------------------------------------------------------- prompt
def test_the_template_renders_every_mvtec_ad_type():
    from acbench.data.category import CategoryData

    assert sum(len(t) for t in MVTEC_AD_TYPES.values()) == 73
    for category, types in MVTEC_AD_TYPES.items():
        data = CategoryData("mvtec", category, None, [], {}, [], {})
        for atype in types:
            prompt = sd_inpaint().prompt(data, atype)
            assert prompt == f"a photo of a {category.replace('_', ' ')} with a {atype.replace('_', ' ')}"
            assert "_" not in prompt and "{" not in prompt and "  " not in prompt
    assert render_prompt("a photo of a {object} with a {defect}", "metal_nut", "scratch_head") == \
        "a photo of a metal nut with a scratch head"
    # the dataset's defect texts (protocol dataset.type_texts) take precedence over the folder name
    data = CategoryData("mvtec", "pill", None, [], {}, [], {}, type_texts={"pill_type": "wrong pill colour"})
    assert sd_inpaint(prompt_template="{defect} on a {object}").prompt(data, "pill_type") == \
        "wrong pill colour on a pill"


@pytest.mark.parametrize("template", ["a photo of a {object}", "a {defect} on {product}", "a {defect"])
def test_a_bad_template_is_named_at_protocol_load(template):
    protocol = {"name": "t", "dataset": {"kind": "demo"},
                "methods": [{"name": "sd-inpaint", "options": {"preset": "tiny", "prompt_template": template}}]}
    with pytest.raises(UserError, match=r"methods\[0\]\.options\.prompt_template: .*template"):
        parse_protocol(protocol)


# ------------------------------------------------------------------------------------- generation
def test_pixels_outside_the_mask_are_exact_and_the_inside_is_painted(brick):
    for options in ({}, {"blur_sigma": 40.0}):
        method = sd_inpaint(**options)
        samples = list(method.generate(brick, GenerationRequest("crack", 4, seed=0)))
        assert len(samples) == 4 and method.provenance()["random_weights"] is True
        for sample in samples:
            normal = normal_of(brick, sample)
            assert sample.mask.any() and not sample.mask.all()
            assert np.array_equal(sample.image[~sample.mask], normal[~sample.mask])  # bit-exact
            assert mean_change(sample.image, normal, sample.mask) > 0.02


def test_same_seed_same_samples_whatever_the_batch_size(brick):
    one = list(sd_inpaint(batch_size=1).generate(brick, GenerationRequest("crack", 3, seed=4)))
    three = list(sd_inpaint(batch_size=3).generate(brick, GenerationRequest("crack", 3, seed=4)))
    other = list(sd_inpaint(batch_size=3).generate(brick, GenerationRequest("crack", 3, seed=5)))
    for a, b in zip(one, three, strict=True):
        assert a.source_normal == b.source_normal and np.array_equal(a.mask, b.mask)
        assert np.abs(a.image.astype(int) - b.image).max() <= 1
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(three, other))


def test_masks_come_from_the_chosen_mask_source(brick):
    method = sd_inpaint(mask_source={"name": "perlin"})
    default = sd_inpaint()
    a = list(method.generate(brick, GenerationRequest("crack", 2, seed=0)))
    b = list(default.generate(brick, GenerationRequest("crack", 2, seed=0)))
    assert not all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b))


# -------------------------------------------------------------------------------------- rejection
def fake_paint(changed_seeds: set[int], calls: list[list[int]]):
    """Paints +60 inside the mask for seeds in `changed_seeds`, nothing for the others."""

    def paint(normals, masks, prompts, seeds):
        calls.append(list(seeds))
        out = []
        for n, m, s in zip(normals, masks, seeds):
            image = n.copy()
            if s in changed_seeds:
                image[m] = np.clip(image[m].astype(int) + 60, 0, 255)
            out.append(image)
        return out

    return paint


def test_rejection_repaints_unchanged_samples_with_new_noise():
    from acbench_methods.sdinpaint.plugin import retry_seed

    normals = [np.full((16, 16, 3), 100, np.uint8) for _ in range(3)]
    masks = [np.zeros((16, 16), bool) for _ in range(3)]
    for m in masks:
        m[4:8, 4:8] = True
    seeds = [11, 12, 13]
    # seed 12 paints nothing at first; its second noise does
    calls: list[list[int]] = []
    paint = fake_paint({11, 13, retry_seed(12, 1)}, calls)
    images, attempts, changes = paint_with_rejection(paint, normals, masks, ["p"] * 3, seeds, 0.1, 3)
    assert attempts == [1, 2, 1] and calls == [seeds, [retry_seed(12, 1)]]  # only the rejected one again
    assert all(c == pytest.approx(60 / 255) for c in changes)
    assert all(mean_change(i, n, m) > 0.1 for i, n, m in zip(images, normals, masks))
    # threshold off: the unchanged sample is kept as painted
    calls.clear()
    images, attempts, _ = paint_with_rejection(paint, normals, masks, ["p"] * 3, seeds, 0.0, 3)
    assert attempts == [1, 1, 1] and np.array_equal(images[1], normals[1])
    # never changing: painted max_attempts times, then kept
    calls.clear()
    images, attempts, changes = paint_with_rejection(fake_paint(set(), calls), normals, masks, ["p"] * 3,
                                                     seeds, 0.1, 3)
    assert attempts == [3, 3, 3] and len(calls) == 3 and changes == [0.0, 0.0, 0.0]


def test_rejection_in_the_plugin_is_counted(brick):
    method = sd_inpaint(min_change=1.0, max_attempts=2)  # no painting changes every pixel by 255
    samples = list(method.generate(brick, GenerationRequest("crack", 3, seed=0)))
    assert len(samples) == 3
    facts = method.provenance()["rejection"]
    assert facts == {"min_change": 1.0, "paintings": 6, "samples": 3, "repainted": 3, "kept_below_threshold": 3}


# --------------------------------------------------------------------------- presets and weights
def test_diag_settings_reach_the_sdxl_pipeline(tmp_path):
    from acbench_methods.sdinpaint.sdxl import random_sdxl_inpaint

    random_sdxl_inpaint("tiny-sdxl").save_pretrained(tmp_path / "sdxl-inpaint")
    method = registry.load("methods", "sd-inpaint")({"preset": "diag", "weights_path": str(tmp_path / "sdxl-inpaint")})
    method.check()
    painter = method.painter()
    assert painter.random_weights is False and painter.source == str(tmp_path / "sdxl-inpaint")
    assert type(painter.pipe).__name__ == "StableDiffusionXLInpaintPipeline"
    seen = []

    def record(**kwargs):
        seen.append(kwargs)
        return SimpleNamespace(images=[kwargs["image"]])

    real = painter.pipe
    painter.pipe = record
    normal = np.full((64, 64, 3), 120, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[10:20, 30:50] = True
    painter.paint([normal, normal], [mask, mask], ["a photo of a bottle with a crack"] * 2, [1, 2])
    assert len(seen) == 2  # the mask crop paints image by image
    for kwargs in seen:
        assert (kwargs["num_inference_steps"], kwargs["guidance_scale"], kwargs["strength"]) == (30, 20.0, 0.99)
        assert kwargs["negative_prompt"] == DIAG_NEGATIVE and kwargs["padding_mask_crop"] == 2
        assert kwargs["height"] == kwargs["width"] == 1024 and kwargs["image"].size == (1024, 1024)
    # and the loaded networks really paint, at a small size, with the crop
    painter.pipe = real
    method.options.resolution, method.options.steps = 64, 2
    painter.preset = method.preset
    out = painter.paint([normal], [mask], ["a photo of a bottle with a crack"], [1])[0]
    assert np.array_equal(out[~mask], normal[~mask]) and not np.array_equal(out[mask], normal[mask])


def test_required_weights_name_each_presets_model(tmp_path):
    from acbench.engine.requirements import locate

    sd15 = registry.load("methods", "sd-inpaint")({}).required_weights()
    diag = registry.load("methods", "sd-inpaint")({"preset": "diag"}).required_weights()
    assert [(w.name, w.repo_id) for w in sd15] == [
        ("stable-diffusion-inpainting", "stable-diffusion-v1-5/stable-diffusion-inpainting")]
    assert [(w.name, w.repo_id) for w in diag] == [
        ("stable-diffusion-xl-inpainting", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1")]
    assert sd_inpaint().required_weights() == []
    (tmp_path / "w").mkdir()
    given = registry.load("methods", "sd-inpaint")({"weights_path": str(tmp_path / "w")}).required_weights()
    assert locate(given[0]).where == str(tmp_path / "w")


def test_missing_weights_are_user_errors(tmp_path, no_network):
    method = registry.load("methods", "sd-inpaint")({"preset": "sd15"})
    with pytest.raises(UserError, match="stable-diffusion-inpainting"):
        method.painter()
    with pytest.raises(UserError, match=r"options.weights_path: folder .*nowhere not found"):
        registry.load("methods", "sd-inpaint")({"weights_path": str(tmp_path / "nowhere")}).check()
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "empty" / "x.png")
    with pytest.raises(UserError, match="not a complete SDXL-inpainting folder"):
        registry.load("methods", "sd-inpaint")({"preset": "diag", "weights_path": str(tmp_path / "empty")}).painter()


def test_the_full_size_sdxl_architecture_has_the_published_sizes():
    """The random `sdxl-arch` (speed benchmarks, `pretrained-or-random`) is SDXL-inpainting's shape."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from acbench_methods.sdinpaint.sdxl import SDXL_TEXT_2, SDXL_UNET, SDXL_VAE

    with torch.device("meta"):  # shapes only, no memory
        unet = UNet2DConditionModel(**SDXL_UNET)
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2))
        vae = AutoencoderKL(**SDXL_VAE)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # SDXL base UNet 2,567,463,684 + 5 extra input channels x 320 x 3 x 3 for the inpainting UNet
    assert count(unet) == 2_567_463_684 + 5 * 320 * 9
    assert count(text_2) == 694_659_840 and count(vae) == 83_653_863
