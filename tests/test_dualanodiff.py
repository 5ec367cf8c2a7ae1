"""DualAnoDiff on tiny random networks: the dual-branch processors, training, sampling, the plugin."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import AttnProcessor2_0

from acbench import registry
from acbench.data.io import load_rgb
from acbench.errors import UserError
from acbench.synthesis import GenerationRequest
from acbench_methods.diffusion.text2img import build_text2img_components
from acbench_methods.dualanodiff import DualAnoDiff
from acbench_methods.dualanodiff.attention import DualAdapter
from acbench_methods.dualanodiff.sampling import SaliencyMask, sample_pairs, threshold_mask
from acbench_methods.dualanodiff.train import (
    TrainData,
    draw_batch,
    dual_unet,
    step_generator,
    train_adapter,
    training_loss,
)

torch.set_num_threads(1)
PROMPTS = ("a vfx with sks", "sks")


@pytest.fixture
def components():
    return build_text2img_components("tiny", "random", seed=0)


def _inputs(components, pairs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(pairs * 2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 500][:pairs]).repeat_interleave(2)
    text = torch.randn(pairs * 2, 77, 32, generator=g)
    reference = torch.randn(pairs, 4, 8, 8, generator=g)
    return latents, t, text, reference


def _zero_outputs(adapter, lora_branches=(0, 1)):
    for proc in adapter.processors.values():
        for layers in proc.lora.values():
            for b in lora_branches:
                torch.nn.init.zeros_(layers[b].up.weight)
        torch.nn.init.zeros_(proc.cross_branch.out.weight)
        torch.nn.init.zeros_(proc.cross_branch.out.bias)


def _perturb(adapter, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _tiny_data(n=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    masks = []
    for i in range(n):
        m = np.zeros((size, size), bool)
        m[10 + 8 * i : 30 + 8 * i, 16:40] = True
        masks.append(m)
    normals = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2)]
    return TrainData.from_arrays(images, masks, normals)


@pytest.mark.parametrize("bcm", [False, True])
def test_zero_lora_and_zero_cross_branch_equal_the_base_unet_exactly(components, bcm):
    latents, t, text, reference = _inputs(components)
    unet = components.unet
    with torch.no_grad():
        base = unet(latents, t, encoder_hidden_states=text).sample
        adapter = DualAdapter(unet, rank=4, bcm=bcm).attach(unet)
        # as initialised (LoRA B = 0 but a random cross-branch attention, as the official code) it differs
        assert not torch.allclose(dual_unet(components, adapter, latents, t, text, reference), base)
        _zero_outputs(adapter)
        assert torch.equal(dual_unet(components, adapter, latents, t, text, reference), base)
        adapter.detach(unet)
        assert isinstance(unet.attn_processors["mid_block.attentions.0.transformer_blocks.0.attn1.processor"],
                          AttnProcessor2_0)


def test_each_branch_uses_its_own_lora(components):
    latents, t, text, _ = _inputs(components)
    unet = components.unet
    with torch.no_grad():
        base = unet(latents, t, encoder_hidden_states=text).sample
        adapter = DualAdapter(unet, rank=4).attach(unet)
        _perturb(adapter)
        _zero_outputs(adapter, lora_branches=(0,))  # fg LoRA non-zero, blend LoRA and cross-branch zero
        out = unet(latents, t, encoder_hidden_states=text).sample
    assert torch.equal(out[0::2], base[0::2])  # blend rows: untouched by the fg branch's LoRA
    assert not torch.allclose(out[1::2], base[1::2])
    adapter.detach(unet)


def test_training_pairs_are_the_image_and_its_anomaly_part_flipped_together():
    data = _tiny_data(n=3)
    data.images = data.images.clamp(-0.99, 1)  # so that -1 marks "outside the mask" unambiguously
    batch = draw_batch(data, 8, step_generator(0, 3))
    pairs = batch["pairs"].view(8, 2, 3, 64, 64)
    blend, fg = pairs[:, 0], pairs[:, 1]
    inside = fg != -1
    assert torch.equal(fg[inside], blend[inside])  # the anomaly part is the image where the mask is set
    areas = {int(m.sum()) for m in data.masks}
    assert {int(i[0].sum()) for i in inside} <= areas  # black elsewhere; the mask moved with the image
    assert batch["normals"].shape == (8, 3, 64, 64)


@pytest.mark.parametrize("bcm", [False, True])
def test_gradients_reach_only_lora_and_cross_branch_parameters(components, bcm):
    adapter = DualAdapter(components.unet, rank=4, bcm=bcm, text_encoder=components.text_encoder)
    adapter.attach(components.unet).requires_grad_(True)
    _perturb(adapter)  # non-zero B, so every adapter tensor lies on a gradient path
    gen = step_generator(0, 0)
    loss = training_loss(components, adapter, DDPMScheduler.from_config(components.scheduler.config),
                         draw_batch(_tiny_data(), 2, gen), PROMPTS, gen)
    loss.backward()
    own = {id(p) for p in adapter.parameters()}  # attached processors are submodules of the UNet
    for module in (components.unet, components.vae, components.text_encoder):
        assert all(p.grad is None for p in module.parameters() if id(p) not in own)
    names = adapter.trainable_names()
    assert any(".lora." in n for n in names) and any(".cross_branch." in n for n in names)
    assert any(n.startswith("text.") for n in names)
    assert any(".ref_" in n for n in names) == bcm
    missing = [n for n, p in adapter.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing[:5]
    adapter.text.detach()


def _eval_loss(components, adapter, data, repeats=3):
    scheduler = DDPMScheduler.from_config(components.scheduler.config)
    with torch.no_grad():
        losses = []
        for k in range(repeats):
            gen = step_generator(1234, k)
            losses.append(float(training_loss(components, adapter, scheduler, draw_batch(data, 2, gen), PROMPTS, gen)))
    return sum(losses) / repeats


def test_a_short_fit_lowers_the_loss_and_resumes_exactly(components, tmp_path):
    data = _tiny_data()
    torch.manual_seed(0)
    adapter = DualAdapter(components.unet, rank=4).attach(components.unet)
    start = {k: v.clone() for k, v in adapter.state_dict().items()}
    before = _eval_loss(components, adapter, data)
    kw = dict(batch_size=2, learning_rate=2e-3, seed=0, checkpoint_every=4)
    report = train_adapter(components, adapter, data, PROMPTS, steps=8, state_dir=tmp_path / "full", **kw)
    after = _eval_loss(components, adapter, data)
    assert len(report.losses) == 8
    assert after < before, (before, after)
    full = {k: v.clone() for k, v in adapter.state_dict().items()}
    # interrupted after the step-4 checkpoint, then resumed: the same adapter as the uninterrupted run
    adapter.load_state_dict(start)
    train_adapter(components, adapter, data, PROMPTS, steps=4, state_dir=tmp_path / "cut", **kw)
    assert not (tmp_path / "cut" / "step.json").exists()  # the last step writes no state
    adapter.load_state_dict(start)
    train_adapter(components, adapter, data, PROMPTS, steps=6, state_dir=tmp_path / "cut", **kw)
    adapter.load_state_dict(start)  # a fresh process would start from the init again
    resumed = train_adapter(components, adapter, data, PROMPTS, steps=8, state_dir=tmp_path / "cut", **kw)
    assert resumed.resumed_from == 4 and len(resumed.losses) == 4
    assert all(torch.equal(full[k], v) for k, v in adapter.state_dict().items())


def test_one_call_returns_both_branches_seeded_per_image(components):
    adapter = DualAdapter(components.unet, rank=4).attach(components.unet)
    _perturb(adapter)
    blends, fgs = sample_pairs(components, adapter, PROMPTS, [3, 4], 64, steps=3, guidance=2.5)
    assert len(blends) == len(fgs) == 2
    assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in blends + fgs)
    assert not np.array_equal(blends[0], fgs[0]) and not np.array_equal(blends[0], blends[1])
    alone, _ = sample_pairs(components, adapter, PROMPTS, [4], 64, steps=3, guidance=2.5)
    assert np.abs(alone[0].astype(int) - blends[1].astype(int)).max() <= 1  # batch-independent noise


def test_save_load_round_trips_bit_exactly(components, tmp_path):
    latents, t, text, reference = _inputs(components)
    unet = components.unet
    adapter = DualAdapter(unet, rank=4, bcm=True, text_encoder=components.text_encoder).attach(unet)
    _perturb(adapter)
    with torch.no_grad():
        expected = dual_unet(components, adapter, latents, t, text, reference)
    adapter.save(tmp_path / "a.safetensors")
    adapter.detach(unet)
    torch.manual_seed(99)
    fresh = DualAdapter(unet, rank=4, bcm=True, text_encoder=components.text_encoder)
    fresh.load(tmp_path / "a.safetensors")
    fresh.attach(unet)
    assert all(torch.equal(v, adapter.state_dict()[k]) for k, v in fresh.state_dict().items())
    with torch.no_grad():
        assert torch.equal(dual_unet(components, fresh, latents, t, text, reference), expected)
    with pytest.raises(ValueError, match="does not match"):
        DualAdapter(unet, rank=2).load(tmp_path / "a.safetensors")
    fresh.detach(unet)


def test_masks_from_the_anomaly_branch(tmp_path):
    fg = np.zeros((32, 32, 3), np.uint8)
    fg[4:10, 6:20] = (40, 10, 5)  # 40 > 0.1 * 255
    fg[20:22, 20:22] = (20, 20, 20)  # below the threshold
    mask = threshold_mask(fg, 0.1)
    assert mask.sum() == 6 * 14 and mask[4:10, 6:20].all()

    class Saliency(torch.nn.Module):  # a stand-in for U2-Net: the image's first channel, several outputs
        def forward(self, x):
            return x[:, :1], x[:, 1:2]

    empty = DualAnoDiff({"model": "tiny"}).mask_of(np.zeros((16, 16, 3), np.uint8) + np.arange(16)[:, None, None])
    assert empty.any() and empty.mean() < 0.2  # never an empty pair: the brightest pixels of the branch

    path = tmp_path / "u2net.pt"
    torch.jit.script(Saliency()).save(str(path))
    salient = SaliencyMask(path, threshold=0.5)(fg)
    assert salient.shape == (32, 32) and salient[5:9, 8:18].all() and not salient[25:, :].any()


@pytest.mark.parametrize("variant", ["default", "bcm"])
def test_plugin_fits_per_type_and_generates(brick, tmp_path, variant):
    cls = registry.load("methods", "dualanodiff")
    method = cls({"model": "tiny", "schedule": "tiny", "variant": variant, "train_steps": 2}, weights="pretrained")
    assert method.required_weights() == []
    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    method.fit([brick], fit_dir, seed=0)
    types = sorted(t for t, ex in brick.synthesis.items() if ex)
    assert sorted(p.name for p in fit_dir.glob("adapter-*")) == sorted(f"adapter-brick-{t}.safetensors" for t in types)
    fresh = cls({"model": "tiny", "schedule": "tiny", "variant": variant, "train_steps": 2})
    request = GenerationRequest(types[0], count=3, seed=0, fit_dir=fit_dir)
    samples = list(fresh.generate(brick, request))
    assert len(samples) == 3 and all(s.mask.any() for s in samples)
    assert fresh.provenance()["random_weights"] is True and "threshold" in fresh.provenance()["mask"]
    if variant == "bcm":
        for s in samples:
            normal = load_rgb(brick.root / s.source_normal, brick.image_size)
            assert s.image.shape == normal.shape
            assert np.array_equal(s.image[~s.mask], normal[~s.mask])  # exactly the normal image outside
            assert not np.array_equal(s.image, normal)
    else:
        assert all(s.source_normal == "" for s in samples)
        pasted = next(cls({"model": "tiny", "schedule": "tiny", "paint_on_normal": True}).generate(
            brick, GenerationRequest(types[0], count=1, seed=0, fit_dir=fit_dir)))
        normal = load_rgb(brick.root / pasted.source_normal, brick.image_size)
        assert np.array_equal(pasted.image[~pasted.mask], normal[~pasted.mask])
        with pytest.raises(UserError, match="rank"):
            next(cls({"model": "tiny", "schedule": "tiny", "rank": 8}).generate(brick, request))
    options = {"model": "tiny", "schedule": "tiny", "variant": variant, "train_steps": 2}
    again = list(cls(options).generate(brick, request))
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) for a, b in zip(samples, again))


def test_bad_input_is_one_clear_error(brick, tmp_path):
    method = DualAnoDiff({"model": "tiny", "schedule": "tiny"})
    with pytest.raises(UserError, match="fit stage"):
        next(method.generate(brick, GenerationRequest("crack", 1, 0, fit_dir=tmp_path)))
    with pytest.raises(UserError, match="saliency_model"):
        DualAnoDiff({"saliency_model": str(tmp_path / "missing.pt")}).check()
    paper = DualAnoDiff({"model": "sd15", "weights_path": str(tmp_path)})
    assert [w.name for w in paper.required_weights()] == ["stable-diffusion-v1-5"]
    assert paper.schedule.rank == 32 and paper.schedule.inference_steps == 100 and paper.schedule.guidance == 2.5
    bcm = DualAnoDiff({"variant": "bcm"})
    assert bcm.schedule.batch_size == 2 and bcm.schedule.inference_steps == 50 and bcm.schedule.guidance == 2.0


def test_a_local_sd15_folder_loads_offline_and_an_inpainting_one_is_refused(components, tmp_path, no_network):
    folder = tmp_path / "sd15"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        getattr(components, name).save_pretrained(folder / name)
    method = DualAnoDiff({"model": "sd15", "weights_path": str(folder)})
    method.check()
    loaded = method.components("cpu")
    assert loaded.random_weights is False and loaded.unet.config.in_channels == 4
    assert method.provenance()["random_weights"] is False
    for mine, theirs in ((loaded.unet, components.unet), (loaded.text_encoder, components.text_encoder)):
        reference = theirs.state_dict()
        assert all(torch.equal(v, reference[k]) for k, v in mine.state_dict().items())
    assert len(loaded.tokenizer) == len(components.tokenizer)
    inpaint = build_text2img_components("tiny", "random").unet.config
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel(**{**dict(inpaint), "in_channels": 9}).save_pretrained(folder / "unet")
    with pytest.raises(UserError, match="4"):
        DualAnoDiff({"model": "sd15", "weights_path": str(folder)}).components("cpu")
