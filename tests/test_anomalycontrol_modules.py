"""AnomalyControl's modules on tiny random networks: SGA adapter, CSM + ASEA, the feature cache."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import Blip2Processor

from acbench.errors import UserError
from acbench_methods.anomalycontrol.cache import FeatureCache, Reference
from acbench_methods.anomalycontrol.csm import clean_caption
from acbench_methods.anomalycontrol.presets import build_csm, ip_adapter_file, load_csm, random_csm
from acbench_methods.anomalycontrol.sga import SemanticGuidedAdapter
from acbench_methods.diffusion import build_inpaint_components

torch.set_num_threads(1)
FEATURE_DIM = 32


@pytest.fixture()
def components():
    return build_inpaint_components("tiny", "random", seed=0)


@pytest.fixture(scope="module")
def csm():
    return random_csm("tiny", seed=0)


def _unet_inputs(unet, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 9, 8, 8, generator=g),
        torch.tensor([50] * batch),
        torch.randn(batch, 7, unet.config.cross_attention_dim, generator=g),
        torch.randn(batch, FEATURE_DIM, generator=g),
    )


def _run(unet, sample, t, text, features=None):
    kwargs = {} if features is None else {"added_cond_kwargs": {"image_embeds": [features[:, None]]}}
    return unet(sample, t, encoder_hidden_states=text, **kwargs).sample


def _references(n=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    refs = []
    for i in range(n):
        mask = np.zeros((size, size), bool)
        mask[8 + 4 * i : 40 + 4 * i, 16:48] = True
        refs.append(
            Reference(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), mask, f"the brick has crack {i}")
        )
    return refs


# ------------------------------------------------------------------------------------------ SGA


def test_adapter_covers_every_cross_attention_and_starts_from_the_text_projections(components):
    unet = components.unet
    adapter = SemanticGuidedAdapter(unet, FEATURE_DIM, proj_dim=64, num_tokens=4)
    cross = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    assert adapter.layer_names == cross and len(cross) == 10  # tiny UNet: 3 down + 1 mid + 6 up (SD1.5: 16)
    modules = dict(unet.named_modules())
    for name, layer in zip(adapter.layer_names, adapter.layers):
        attn = modules[name.removesuffix(".processor")]
        assert torch.equal(layer.to_k_ip[0].weight, attn.to_k.weight)
        assert torch.equal(layer.to_v_ip[0].weight, attn.to_v.weight)


def test_lambda_zero_reproduces_the_base_unet_and_detach_restores_it(components):
    unet = components.unet
    sample, t, text, features = _unet_inputs(unet)
    with torch.no_grad():
        base = _run(unet, sample, t, text)
        adapter = SemanticGuidedAdapter(unet, FEATURE_DIM, proj_dim=64, num_tokens=4)
        adapter.attach(unet)
        adapter.set_scale(0.0)
        assert torch.allclose(_run(unet, sample, t, text, features), base, atol=1e-6, rtol=0)
        adapter.set_scale(1.0)
        guided = _run(unet, sample, t, text, features)
        assert not torch.allclose(guided, base, atol=1e-4)
        other = _run(unet, sample, t, text, features.flip(0))  # the feature steers the output
        assert not torch.allclose(guided, other, atol=1e-4)
        SemanticGuidedAdapter.detach(unet)
        assert torch.allclose(_run(unet, sample, t, text), base, atol=1e-6, rtol=0)


def test_after_backward_only_the_adapter_has_gradients(components, csm):
    unet = components.unet
    adapter = SemanticGuidedAdapter(unet, FEATURE_DIM, proj_dim=64, num_tokens=4)
    adapter.attach(unet)
    adapter.requires_grad_(True)
    sample, t, text, features = _unet_inputs(unet)
    _run(unet, sample, t, text, features).pow(2).mean().backward()
    adapter_ids = {id(p) for p in adapter.parameters()}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    frozen = [p for p in unet.parameters() if id(p) not in adapter_ids]
    frozen += list(components.vae.parameters()) + list(components.text_encoder.parameters())
    frozen += list(csm.model.parameters())
    assert frozen and all(p.grad is None for p in frozen)
    trainable = {n for n, p in adapter.named_parameters()}
    assert any(n.startswith("projection.feature_proj") for n in trainable)
    assert any(n.startswith("projection.image_proj") for n in trainable)
    assert sum(".to_k_ip." in n or ".to_v_ip." in n for n in trainable) == 2 * len(adapter.layers)


def test_adapter_save_load_round_trips_bit_exactly(components, tmp_path):
    unet = components.unet
    adapter = SemanticGuidedAdapter(unet, FEATURE_DIM, proj_dim=64, num_tokens=4)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn_like(p))
    adapter.save(tmp_path / "adapter.safetensors")
    other = SemanticGuidedAdapter(unet, FEATURE_DIM, proj_dim=64, num_tokens=4)
    other.load(tmp_path / "adapter.safetensors")
    ours, theirs = adapter.state_dict(), other.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    wrong = SemanticGuidedAdapter(unet, FEATURE_DIM, proj_dim=32, num_tokens=4)
    with pytest.raises(UserError, match="does not match"):
        wrong.load(tmp_path / "adapter.safetensors")


def test_ip_adapter_checkpoint_initialises_projection_and_kv(components, tmp_path):
    """The original IP-Adapter key layout: image_proj.{proj,norm}, ip_adapter.{1,3,5..}.to_{k,v}_ip."""
    unet = components.unet
    adapter = SemanticGuidedAdapter(unet, FEATURE_DIM, proj_dim=64, num_tokens=4)
    cad = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(0)
    state = {
        "image_proj.proj.weight": torch.randn(cad * 4, 64, generator=g),
        "image_proj.proj.bias": torch.randn(cad * 4, generator=g),
        "image_proj.norm.weight": torch.randn(cad, generator=g),
        "image_proj.norm.bias": torch.randn(cad, generator=g),
    }
    for i, layer in enumerate(adapter.layers):
        for kv in ("k", "v"):
            state[f"ip_adapter.{2 * i + 1}.to_{kv}_ip.weight"] = torch.randn(
                layer.hidden_size, cad, generator=g
            )
    (tmp_path / "IP-Adapter" / "models").mkdir(parents=True)
    save_file(state, tmp_path / "IP-Adapter" / "models" / "ip-adapter_sd15.safetensors")
    adapter.load_ip_adapter(ip_adapter_file(tmp_path / "IP-Adapter"))  # a copy of the h94/IP-Adapter repo
    assert torch.equal(adapter.projection.image_proj.image_embeds.weight, state["image_proj.proj.weight"])
    assert torch.equal(adapter.layers[3].to_v_ip[0].weight, state["ip_adapter.7.to_v_ip.weight"])
    del state["ip_adapter.5.to_k_ip.weight"]
    save_file(state, tmp_path / "partial.safetensors")
    with pytest.raises(UserError, match="missing ip_adapter.5.to_k_ip.weight"):
        adapter.load_ip_adapter(tmp_path / "partial.safetensors")
    with pytest.raises(UserError, match="ip_adapter_path"):
        ip_adapter_file(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------ CSM / ASEA


def test_caption_cleaning_follows_blip_caption():
    assert (
        clean_caption("The Bottle has contamination, with WHITE filler!")
        == "the bottle has contamination with white filler"
    )
    assert len(clean_caption(" ".join(["w"] * 80)).split()) == 50


def test_asea_concentrates_attention_inside_the_mask(csm):
    refs = _references()
    result = csm(
        [r.image for r in refs], [r.caption for r in refs], [r.mask for r in refs], asea_steps=5, asea_lr=0.1
    )
    losses, shares = np.array(result.losses), np.array(result.mask_attention)
    assert losses.shape == shares.shape == (5, 2)
    assert np.all(np.diff(losses, axis=0) < 0) and np.all(np.diff(shares, axis=0) > 0)
    assert result.features.shape == (2, FEATURE_DIM)


def test_asea_is_per_sample_and_changes_the_feature(csm):
    refs = _references(3)
    images, texts, masks = [r.image for r in refs], [r.caption for r in refs], [r.mask for r in refs]
    batch = csm(images, texts, masks, asea_steps=3).features
    alone = csm(images[1:2], texts[1:2], masks[1:2], asea_steps=3).features
    assert torch.allclose(batch[1:2], alone, atol=1e-5)
    plain = csm(images, texts, masks, asea_steps=0).features
    image_only = csm(images, None, masks, asea_steps=0).features
    assert not torch.allclose(batch, plain, atol=1e-5)  # the guided pass gives another feature
    assert not torch.allclose(plain, image_only, atol=1e-3)  # the text takes part in the pass
    assert all(p.grad is None for p in csm.model.parameters())  # ASEA changes no VLM weight


def test_mask_share_geometry_with_one_hot_attention_on_a_patch(csm):
    """A hand-made cross-attention tensor (every layer, head and query attends to patch (r, c) only):
    the in-mask share is 1 exactly when the image-space mask covers that patch. Patches are numbered
    row-major after the CLS key; the mask is given at its own (file) resolution, here 1.75 x the ViT input."""
    grid, vit = csm.grid, csm.model.config.vision_config.image_size
    raw, cell = vit * 7 // 4, vit * 7 // 4 // grid  # 112 px, 14 px per patch
    heads, queries = 2, 3
    for r, c in [(0, 0), (2, 5), (grid - 1, grid - 1), (5, 2)]:
        attention = torch.zeros(1, heads, queries, 1 + grid * grid)
        attention[..., 1 + r * grid + c] = 1.0
        cross = (attention, None, attention.clone())  # cross-attention every 2nd layer; others None
        shares = {}
        for rr, cc in [(r, c), (c, r), ((r + 1) % grid, c), (r, (c + 1) % grid)]:
            mask = np.zeros((raw, raw), bool)
            mask[rr * cell : (rr + 1) * cell, cc * cell : (cc + 1) * cell] = True  # exactly one patch
            shares[(rr, cc)] = float(csm.mask_share(csm.patch_attention(cross), csm._patch_masks([mask]))[0])
        assert shares[(r, c)] == 1.0
        assert all(v == 0.0 for k, v in shares.items() if k != (r, c))


def test_a_mask_covering_one_patch_puts_its_target_on_that_patch():
    """The patch-grid resize (PIL nearest on the raw mask): a defect covering exactly one patch lands on
    that patch; torch's corner-sampling `nearest` (the old resize) shifts or loses it."""
    import torch.nn.functional as F

    from acbench_methods.anomalycontrol.csm import patch_grid_mask

    raw, vit, grid = 900, 224, 16  # an MVTec-sized mask, the ViT-g input, its 16 x 16 patch grid
    cell = raw / grid
    r, c = 7, 3
    mask = np.zeros((raw, raw), bool)
    mask[round(r * cell) : round((r + 1) * cell), round(c * cell) : round((c + 1) * cell)] = True
    target = patch_grid_mask(mask, vit, grid).reshape(grid, grid)
    assert target.sum() == 1 and target[r, c] == 1
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    corner = F.interpolate(F.interpolate(m, size=(vit, vit)), size=(grid, grid))[0, 0]
    assert corner[r, c] == 0  # what the corner-sampling resize would have given: the patch is lost


def test_captions_of_different_lengths_give_the_same_features_batched_or_alone(csm):
    refs = _references(3)
    texts = ["crack", "the brick has a long and deep crack near its upper left edge", "a hole"]
    images, masks = [r.image for r in refs], [r.mask for r in refs]
    for steps in (0, 3):
        batch = csm(images, texts, masks, asea_steps=steps).features
        for i in range(3):
            alone = csm(images[i : i + 1], texts[i : i + 1], masks[i : i + 1], asea_steps=steps).features
            assert torch.allclose(batch[i : i + 1], alone, atol=1e-5), (steps, i)


def test_csm_loads_from_a_saved_folder(csm, tmp_path):
    csm.model.save_pretrained(tmp_path / "blip2-itm")
    Blip2Processor(image_processor=csm.image_processor, tokenizer=csm.tokenizer).save_pretrained(
        tmp_path / "blip2-itm"
    )
    loaded, random_weights = build_csm("sd15", "pretrained", tmp_path / "blip2-itm")
    assert not random_weights and loaded.fingerprint() == csm.fingerprint()
    refs = _references()
    args = ([r.image for r in refs], [r.caption for r in refs], [r.mask for r in refs])
    assert torch.allclose(loaded(*args, asea_steps=2).features, csm(*args, asea_steps=2).features, atol=1e-5)
    with pytest.raises(UserError, match="blip2"):
        load_csm(tmp_path / "missing")


def test_feature_cache_is_hit_on_the_second_run(csm, tmp_path):
    refs = _references(3)
    calls = []

    def compute(batch):
        calls.append(len(batch))
        return csm([r.image for r in batch], [r.caption for r in batch], [r.mask for r in batch], 2).features

    first = FeatureCache(tmp_path)
    a = first.get_or_compute(csm.fingerprint(), refs, "asea=2", compute)
    assert (first.hits, first.misses, calls) == (0, 3, [3])
    second = FeatureCache(tmp_path)  # a new run: a new cache object over the same folder
    b = second.get_or_compute(csm.fingerprint(), refs, "asea=2", compute)
    assert (second.hits, second.misses, calls) == (3, 0, [3])
    assert torch.equal(a, b)
    third = FeatureCache(tmp_path)  # other settings or another caption are other entries
    third.get_or_compute(
        csm.fingerprint(), [Reference(refs[0].image, refs[0].mask, "other text")], "asea=2", compute
    )
    third.get_or_compute(csm.fingerprint(), refs[:1], "asea=0", compute)
    assert third.misses == 2 and calls == [3, 1, 1]


def test_sd15_architecture_matches_the_published_model_sizes():
    """The full-size configs (used for GPU benchmarks with random weights) are the real architectures."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, CLIPTextConfig, CLIPTextModel

    from acbench_methods.anomalycontrol.presets import BLIP2_ITM_CONFIG
    from acbench_methods.diffusion.components import SD15_TEXT, SD15_UNET, SD15_VAE

    def count(module):
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):  # shapes only: no memory, no time
        unet = UNet2DConditionModel(**SD15_UNET)
        blip = Blip2ForImageTextRetrieval(Blip2Config(**BLIP2_ITM_CONFIG))
        adapter = SemanticGuidedAdapter(unet, 768, proj_dim=1024, num_tokens=4)
        assert count(unet) == 859_535_364  # SD-1.5-inpainting UNet (9 input channels)
        assert count(AutoencoderKL(**SD15_VAE)) == 83_653_863
        assert count(CLIPTextModel(CLIPTextConfig(**SD15_TEXT))) == 123_060_480  # CLIP ViT-L/14 text
        assert count(blip.vision_model) == 985_952_256  # EVA ViT-g/14
    assert len(adapter.layers) == 16  # every cross-attention of SD-1.5
    assert count(adapter) == 23_107_072  # IP-Adapter size (22.3 M) + the 768 -> 1024 feature projection
    assert blip.config.num_query_tokens == 32 and blip.config.qformer_config.hidden_size == 768
    assert blip.config.vision_config.image_size // blip.config.vision_config.patch_size == 16


def test_captions_file_overrides_the_template_per_image(tmp_path):
    from acbench.data.category import CategoryData, DefectExample
    from acbench_methods.anomalycontrol.references import caption_of, load_captions

    root = tmp_path / "data"
    example = DefectExample(root / "bottle/test/broken_large/000.png", root / "m.png", "broken_large")
    other = DefectExample(root / "bottle/test/broken_large/001.png", root / "m.png", "broken_large")
    data = CategoryData("mvtec", "bottle", root, [], {"broken_large": [example, other]}, [], {})
    (tmp_path / "captions.json").write_text(
        '{"bottle/test/broken_large/000.png": "The bottle has a chipped rim."}'
    )
    captions = load_captions(tmp_path / "captions.json")
    assert (
        caption_of(example, data, captions, "The {category} has {defect}") == "The bottle has a chipped rim."
    )
    assert caption_of(other, data, captions, "The {category} has {defect}") == "The bottle has broken large"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json: not valid JSON"):
        load_captions(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not found"):
        load_captions(tmp_path / "missing.json")
