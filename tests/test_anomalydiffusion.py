"""AnomalyDiffusion on the tiny random LDM-shaped base: what trains, what the sampler guarantees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from acbench import registry
from acbench.data.io import load_rgb
from acbench.masks import get_mask_source
from acbench.synthesis import GenerationRequest
from acbench_methods.anomalydiffusion.attention import AARState, AdaptiveCrossAttnProcessor, aar_weights
from acbench_methods.anomalydiffusion.base import load_base, load_folder, save_folder, tiny_base
from acbench_methods.anomalydiffusion.embedding import AnomalyEmbedding, load_anomaly_embedding, save_module
from acbench_methods.anomalydiffusion.model import load_fitted
from acbench_methods.anomalydiffusion.sampling import binarise_masks
from acbench_methods.anomalydiffusion.train import TrainConfig, TrainItem, diffusion_loss, step_generator, train

TINY = {"model": "tiny", "schedule": "tiny"}


def method(**options):
    return registry.load("methods", "anomalydiffusion")({**TINY, **options}, weights="random")


@pytest.fixture(scope="module")
def fitted(brick, tmp_path_factory):
    """The tiny method fitted once on the demo brick category (embeddings and mask model)."""
    workdir = tmp_path_factory.mktemp("ad-fit")
    method().fit([brick], workdir, seed=0)
    return workdir


def items_of(data, base, n=2):
    from acbench_methods.anomalydiffusion import mask_tensor, to_tensor

    examples = data.synthesis["hole"][:n]
    return [TrainItem(to_tensor(e.image(), base.resolution), mask_tensor(e.mask(), base.resolution), "brick/hole")
            for e in examples]


def embedding_for(base):
    torch.manual_seed(0)  # the same initial encoder every time
    return AnomalyEmbedding(["brick/hole", "brick/crack"], 2, 2, torch.zeros(base.hidden_size), (8, 16))


def call(module, keys, masks):
    return module(keys, masks)


def test_only_learned_embeddings_and_encoder_get_gradients(brick):
    base = tiny_base()
    module = embedding_for(base)
    items = items_of(brick, base)
    loss = diffusion_loss(base, module, call, torch.stack([i.image for i in items]),
                          torch.stack([i.mask for i in items]), ["brick/hole"] * 2, step_generator(0, 0), masked=True)
    loss.backward()
    frozen = [*base.unet.parameters(), *base.vae.parameters(), *base.text_encoder.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert module.anomaly.vectors.grad[0].abs().sum() > 0  # the used key
    assert module.anomaly.vectors.grad[1].abs().sum() == 0  # an unused key stays untouched
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.spatial.parameters())


def test_short_overfit_lowers_the_loss(brick):
    """Adam on the learned parts only, one fixed noise draw: a model that can learn drives this loss down."""
    base = tiny_base()
    module = embedding_for(base)
    items = items_of(brick, base)
    images, masks = torch.stack([i.image for i in items]), torch.stack([i.mask for i in items])
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        loss = diffusion_loss(base, module, call, images, masks, ["brick/hole"] * 2, step_generator(7, 0), masked=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.93 * losses[0]
    assert all(p.grad is None for p in base.unet.parameters())


def test_interrupted_training_resumes_to_the_same_parameters(brick, tmp_path):
    base = tiny_base()
    items = items_of(brick, base)
    cfg = TrainConfig(steps=4, batch_size=2, learning_rate=0.05, save_every=2, masked_loss=True)
    straight = embedding_for(base)
    train(base, straight, call, items, cfg, tmp_path / "a", seed=3, device="cpu")

    def crash_at_3(step, _total):
        if step == 3:
            raise KeyboardInterrupt

    resumed = embedding_for(base)
    with pytest.raises(KeyboardInterrupt):
        train(base, resumed, call, items, cfg, tmp_path / "b", seed=3, device="cpu", progress=crash_at_3)
    resumed = embedding_for(base)  # a fresh process: parameters come back from the saved state
    steps_seen = []
    train(base, resumed, call, items, cfg, tmp_path / "b", seed=3, device="cpu",
          progress=lambda s, _t: steps_seen.append(s))
    assert steps_seen == [3, 4]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def attention_case(seed=0):
    torch.manual_seed(seed)
    attn = Attention(query_dim=32, cross_attention_dim=32, heads=2, dim_head=16).eval()
    hidden = torch.randn(1, 16, 32)  # a 4x4 latent grid
    context = torch.randn(1, 8, 32) * 3
    span = torch.zeros(1, 8, dtype=torch.bool)
    span[0, 2:6] = True
    weights = torch.ones(1, 1, 4, 4)
    weights[0, 0, :2, :2] = 1.5  # the mask: the top-left 2x2 pixels
    return attn, hidden, context, span, weights


def run_processor(attn, hidden, context, span, weights, mode):
    state = AARState(weights=weights, span=span, mode=mode, record=True)
    out = AdaptiveCrossAttnProcessor(state)(attn, hidden, context)
    return out, state.recorded[0][0]  # probs [heads, N, L]


def test_processor_without_weights_is_plain_attention():
    attn, hidden, context, span, _ = attention_case()
    out, _ = run_processor(attn, hidden, context, span, None, "scale")
    torch.testing.assert_close(out, AttnProcessor2_0()(attn, hidden, context), atol=1e-5, rtol=1e-5)


def test_reweighting_raises_in_mask_attention_on_the_tokens():
    attn, hidden, context, span, weights = attention_case()
    _, plain = run_processor(attn, hidden, context, span, None, "shift")
    _, shifted = run_processor(attn, hidden, context, span, weights, "shift")
    inside = weights.flatten() > 1
    mass_plain, mass_shift = plain[..., 2:6].sum(-1), shifted[..., 2:6].sum(-1)  # [heads, N]
    assert (mass_shift[:, inside] > mass_plain[:, inside] + 1e-4).all()
    torch.testing.assert_close(mass_shift[:, ~inside], mass_plain[:, ~inside])
    # `scale` multiplies the span's logits by w: checked against an independent computation
    _, scaled = run_processor(attn, hidden, context, span, weights, "scale")
    q = attn.to_q(hidden).view(1, 16, 2, 16).transpose(1, 2)[0]
    k = attn.to_k(context).view(1, 8, 2, 16).transpose(1, 2)[0]
    logits = torch.einsum("hnd,hld->hnl", q, k) / 4.0
    w = weights.flatten()[None, :, None]
    expected = torch.where(span[0][None, None, :], logits * w, logits).softmax(-1)
    torch.testing.assert_close(scaled.detach(), expected.detach(), atol=1e-5, rtol=1e-5)


def test_aar_weights_favour_mask_pixels_still_close_to_normal():
    normal = torch.zeros(1, 4, 8, 8)
    reference = torch.zeros(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 2:6, 2:6] = 1
    reference[0, :, 2:6, 2:4] = 0.1  # left half of the mask: anomaly still weak
    reference[0, :, 2:6, 4:6] = 1.0  # right half: already far from normal
    w = aar_weights(reference, normal, mask, t=0, num_steps=4)  # t = 0: no dilation at this grid size
    assert torch.equal(w[mask == 0], torch.ones_like(w[mask == 0]))
    assert (w[0, 0, 2:6, 2:4] == 1.5).all() and (w[0, 0, 2:6, 4:6] == 1.0).all()
    assert torch.equal(aar_weights(normal, normal, mask, 0, 4), torch.ones_like(w))  # nothing to compare: w = 1


def test_binarise_masks_threshold_and_border_rule():
    images = torch.zeros(3, 3, 12, 12)
    images[0, :, 4:8, 4:8] = 0.9  # a blob in the middle: kept
    images[1, :, 0, :] = 0.9  # a full top row: touches the border too much
    kept = binarise_masks(images, threshold=0.8)
    assert kept[0].dtype == torch.bool and kept[0].sum() == 16
    assert kept[1] is None and kept[2] is None  # border rule, empty


def test_generated_masks_are_binary_and_come_from_the_model(brick, fitted):
    source = get_mask_source("anomalydiffusion", {"checkpoint": str(fitted)})
    rng = np.random.default_rng(0)
    normal = brick.normal_image(0)
    for _ in range(3):
        mask = source.sample(brick, "crack", normal, rng)
        assert mask.dtype == bool and mask.shape == normal.shape[:2] and mask.any()
    assert source.generated == 3 and source.fallbacks == 0


def test_embedding_and_base_save_load_round_trip(brick, tmp_path):
    base = tiny_base(seed=1)
    save_folder(base, tmp_path / "ldm")
    loaded = load_base("ldm", "pretrained", explicit=tmp_path / "ldm")
    assert not loaded.random_weights and loaded.resolution_info.source == "path"
    ids, slots = base.prompt_ids("a photo of a *", 4)
    vectors = torch.randn(1, 4, base.hidden_size)
    torch.testing.assert_close(base.text_states(ids[None], slots[None], vectors),
                               loaded.text_states(ids[None], slots[None], vectors))
    for a, b in zip(base.unet.state_dict().values(), load_folder("ldm", tmp_path / "ldm").unet.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    module = embedding_for(base)
    torch.nn.init.normal_(module.anomaly.vectors)
    save_module(module, tmp_path / "emb.safetensors", {"keys": module.anomaly.keys, "n_anomaly": 2, "n_spatial": 2,
                                                         "dim": base.hidden_size, "widths": [8, 16]})
    again = load_anomaly_embedding(tmp_path / "emb.safetensors")
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, 10:30, 20:40] = 1
    keys = ["brick/hole", "brick/crack"]
    torch.testing.assert_close(module(keys, masks), again(keys, masks))


def test_fit_writes_one_checkpoint_for_every_type(fitted, brick):
    model = load_fitted(fitted)
    assert model.keys == [f"brick/{t}" for t in sorted(brick.synthesis)]
    assert model.meta["random_weights"] and (fitted / "anomaly_embedding.safetensors").is_file()


def generate(data, fitted, seed, count=3, **options):
    return list(method(**options).generate(data, GenerationRequest("hole", count, seed, fit_dir=fitted)))


def test_same_seed_same_outputs(brick, fitted):
    first, second, other = generate(brick, fitted, 0), generate(brick, fitted, 0), generate(brick, fitted, 1)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))


def test_composited_output_equals_the_normal_image_outside_the_mask_and_aar_acts_inside(brick, fitted,
                                                                                       monkeypatch):
    from acbench_methods.anomalydiffusion import sampling

    weights_seen: list[float] = []  # how far each step's AAR weights are from "no re-weighting"
    original = sampling.aar_weights

    def spy(*args, **kwargs):
        w = original(*args, **kwargs)
        weights_seen.append(float((w - 1).abs().max()))
        return w

    monkeypatch.setattr(sampling, "aar_weights", spy)
    runs = {aar: generate(brick, fitted, 0, adaptive_attention=aar, mask_source={"name": "real-augmented"})
            for aar in ("on", "off")}
    assert weights_seen and max(weights_seen) > 0  # with AAR on, some step really re-weights attention
    for sample in runs["on"] + runs["off"]:
        normal = load_rgb(brick.root / sample.source_normal)
        assert sample.image.shape == normal.shape and sample.mask.any()
        assert np.array_equal(sample.image[~sample.mask], normal[~sample.mask])
        assert np.abs(sample.image[sample.mask].astype(int) - normal[sample.mask]).mean() > 1
    for on, off in zip(runs["on"], runs["off"], strict=True):  # same seed: same normals and masks
        assert np.array_equal(on.mask, off.mask) and on.source_normal == off.source_normal
    # AAR changes the generated defect, and only there
    assert any(not np.array_equal(on.image[on.mask], off.image[off.mask])
               for on, off in zip(runs["on"], runs["off"], strict=True))


def test_a_study_fits_once_for_the_dataset_and_flags_random_weights(tmp_path):
    from acbench.engine import run_study
    from acbench.protocol import parse_protocol

    protocol = parse_protocol({
        "name": "ad", "dataset": {"kind": "demo", "categories": ["gravel"]},
        "methods": [{"name": "anomalydiffusion", "options": {**TINY, "mask_source": {"name": "perlin"}}}],
        "generation": {"per_type": 2}, "metrics": ["mask-alignment"], "weights": "pretrained-or-random"})
    result = run_study(protocol, out=tmp_path / "run")
    assert result.ok and result.ran[0] == "fit/anomalydiffusion/_all/0"
    import pandas as pd

    rows = pd.read_csv(result.root / "results.csv")
    assert set(rows["generator_weights"]) == {"random"}
    assert np.allclose(rows.loc[rows.metric == "mask_precision", "value"], 1.0)  # composited: changes stay in the mask


def test_sd15_layout_loads_and_takes_learned_tokens(tmp_path):
    """The SD-1.5 option: CLIP text encoder + tokenizer, `text_encoder/` and `vae/` subfolders."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[], model_max_length=24)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=24, bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1,
        pad_token_id=len(vocab) - 1))
    tiny = tiny_base()
    text_encoder.save_pretrained(tmp_path / "text_encoder")
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    tiny.vae.save_pretrained(tmp_path / "vae")
    tiny.unet.save_pretrained(tmp_path / "unet")
    save_folder(tiny, tmp_path / "ldm")
    (tmp_path / "ldm" / "scheduler").rename(tmp_path / "scheduler")
    base = load_base("sd15", "pretrained", explicit=tmp_path)
    ids, slots = base.prompt_ids("a photo of a *", 4)
    assert slots.sum() == 4 and ids[slots].eq(ids[slots][0]).all()
    vectors = torch.randn(1, 4, 32, requires_grad=True)
    states = base.text_states(ids[None], slots[None], vectors)
    states.pow(2).sum().backward()
    assert vectors.grad.abs().sum() > 0
    other = base.text_states(ids[None], slots[None], torch.randn(1, 4, 32))
    assert not torch.allclose(states.detach(), other)


def test_missing_ldm_weights_are_a_user_error_or_a_flagged_random_base(tmp_path, monkeypatch, brick):
    from acbench.errors import UserError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="CompVis/ldm-text2im-large-256"):
        load_base("ldm", "pretrained")
    fallback = load_base("ldm", "pretrained-or-random")
    assert fallback.random_weights and fallback.architecture == "tiny"
    ldm = registry.load("methods", "anomalydiffusion")({"model": "ldm", "schedule": "tiny"},
                                                       weights="pretrained-or-random")
    ldm.fit([brick], tmp_path / "fit", seed=0)
    assert ldm.provenance()["random_weights"] and ldm.provenance()["base_weights"]["source"] == "random"


def test_adaptive_attention_default_and_per_type_choice():
    default = method()
    assert default.aar_enabled("wood", "color") and not default.aar_enabled("capsule", "squeeze")
    chosen = method(adaptive_attention_types={"squeeze": True, "wood/color": False})
    assert chosen.aar_enabled("capsule", "squeeze") and not chosen.aar_enabled("wood", "color")
    assert chosen.aar_enabled("carpet", "color")


def test_an_interrupted_fit_resumes_from_its_train_state_dir(brick, tmp_path, monkeypatch):
    import acbench_methods.anomalydiffusion as package

    options = {"train_state_dir": str(tmp_path / "state"), "train_steps": 8, "mask_train_steps": 0}
    method(**{**options, "train_state_dir": None}).fit([brick], tmp_path / "reference", seed=0)

    real_train = package.train  # the training function the fit calls

    def dies_after_five(*args, **kwargs):
        def progress(step, _total):
            if step == 5:
                raise KeyboardInterrupt
        return real_train(*args[:-1], progress, **kwargs)

    monkeypatch.setattr("acbench_methods.anomalydiffusion.train", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        method(**options).fit([brick], tmp_path / "attempt-1", seed=0)
    monkeypatch.setattr("acbench_methods.anomalydiffusion.train", real_train)
    resumed = method(**options)
    resumed.fit([brick], tmp_path / "attempt-2", seed=0)  # a new fit folder, as the study engine gives
    assert len(resumed.losses["anomaly"]) == 4  # steps 5..8 only (state saved every 4 steps)
    a = load_anomaly_embedding(tmp_path / "reference" / "anomaly_embedding.safetensors").state_dict()
    b = load_anomaly_embedding(tmp_path / "attempt-2" / "anomaly_embedding.safetensors").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name])
