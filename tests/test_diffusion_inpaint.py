"""The shared SD-inpainting package: loading a saved folder, seeded batched sampling, compositing."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from acbench.errors import UserError
from acbench_methods.diffusion import build_inpaint_components, composite, inpaint_latents, sample_inpaint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return build_inpaint_components("tiny", "random", seed=0)


def _images(n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    masks = []
    for _ in range(n):
        m = np.zeros((size, size), bool)
        y, x = rng.integers(0, size // 2, size=2)
        m[y : y + size // 3, x : x + size // 4] = True
        masks.append(m)
    return images, masks


def _unet_output(components):
    torch.manual_seed(1)
    sample = torch.randn(1, 9, 8, 8)
    text = torch.randn(1, 5, components.unet.config.cross_attention_dim)
    with torch.no_grad():
        return components.unet(sample, torch.tensor([10]), encoder_hidden_states=text).sample


def test_tiny_components_are_random_and_frozen(tiny):
    assert tiny.random_weights and tiny.provenance["random_weights"] is True
    assert tiny.unet.config.in_channels == 9
    assert not any(p.requires_grad for p in tiny.unet.parameters())


def test_real_loading_from_a_saved_folder_reproduces_the_networks(tiny, tmp_path):
    pipe = tiny.pipeline()
    pipe.save_pretrained(tmp_path / "sd-inpaint")
    loaded = build_inpaint_components("sd15", "pretrained", path=tmp_path / "sd-inpaint")
    assert not loaded.random_weights and loaded.source == str(tmp_path / "sd-inpaint")
    for mine, theirs in (
        (loaded.unet, tiny.unet),
        (loaded.vae, tiny.vae),
        (loaded.text_encoder, tiny.text_encoder),
    ):
        ref = theirs.state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in mine.state_dict().items())
    assert torch.allclose(_unet_output(loaded), _unet_output(tiny), atol=1e-5)
    assert loaded.tokenizer("a crack").input_ids == tiny.tokenizer("a crack").input_ids


def test_a_folder_without_tokenizer_is_a_user_error(tiny, tmp_path):
    tiny.pipeline().save_pretrained(tmp_path / "broken")
    for f in (tmp_path / "broken" / "tokenizer").iterdir():
        f.unlink()
    with pytest.raises(UserError, match="tokenizer"):
        build_inpaint_components("sd15", "pretrained", path=tmp_path / "broken")


def test_a_text_to_image_unet_is_refused(tiny, tmp_path):
    from diffusers import UNet2DConditionModel

    tiny.pipeline().save_pretrained(tmp_path / "t2i")
    cfg = dict(tiny.unet.config)
    cfg["in_channels"] = 4
    UNet2DConditionModel.from_config(cfg).save_pretrained(tmp_path / "t2i" / "unet")
    with pytest.raises(UserError, match="9"):
        build_inpaint_components("sd15", "pretrained", path=tmp_path / "t2i")


def test_inpaint_latents_blank_the_mask_and_match_the_latent_grid(tiny):
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, :32] = 1
    gen = torch.Generator().manual_seed(0)
    latents, mask_latent, masked = inpaint_latents(tiny.vae, images, masks, gen)
    assert latents.shape == masked.shape == (2, 4, 8, 8) and mask_latent.shape == (2, 1, 8, 8)
    assert mask_latent[:, :, :4].eq(1).all() and mask_latent[:, :, 4:].eq(0).all()
    # the masked image does not depend on the pixels under the mask
    changed = images.clone()
    changed[:, :, :32] = 0.5
    _, _, masked_2 = inpaint_latents(tiny.vae, changed, masks, torch.Generator().manual_seed(0))
    assert torch.allclose(masked, masked_2)


def test_same_seed_same_image_and_batching_does_not_change_an_image(tiny):
    pipe = tiny.pipeline()
    images, masks = _images(3)
    kw = {"steps": 3, "strength": 0.7, "guidance": 3.0}
    batch = sample_inpaint(pipe, images, masks, ["a crack"] * 3, [5, 6, 7], **kw)
    again = sample_inpaint(pipe, images, masks, ["a crack"] * 3, [5, 6, 7], **kw)
    alone = sample_inpaint(pipe, images[1:2], masks[1:2], ["a crack"], [6], **kw)
    other = sample_inpaint(pipe, images[1:2], masks[1:2], ["a crack"], [99], **kw)
    assert all(np.array_equal(a, b) for a, b in zip(batch, again))
    assert np.abs(batch[1].astype(int) - alone[0]).max() <= 1
    assert not np.array_equal(alone[0], other[0])


def test_composite_keeps_every_pixel_outside_the_mask():
    images, masks = _images(2)
    generated, original, mask = images[0], images[1], masks[0]
    for mode in ("inside", "off", "blurred"):
        out = composite(generated, original, mask, mode, sigma=2.0)
        if mode == "inside":
            assert np.array_equal(out[~mask], original[~mask])
            assert not np.array_equal(out[mask], original[mask])
        elif mode == "off":
            assert np.array_equal(out, generated)
        else:  # the reference's blurred mask also touches a halo outside the mask
            assert not np.array_equal(out[~mask], original[~mask])


def test_hub_id_resolves_from_a_populated_hf_cache(tiny, tmp_path, monkeypatch):
    """With no explicit path, `sd15` finds SD-inpainting in the Hugging Face cache, offline."""
    import huggingface_hub.constants

    from acbench_methods.diffusion.components import SD15_INPAINT_REPO

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / ("models--" + SD15_INPAINT_REPO.replace("/", "--"))
    tiny.pipeline().save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = build_inpaint_components("sd15", "pretrained")
    assert not loaded.random_weights and loaded.source.endswith(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="stable-diffusion-inpainting"):
        build_inpaint_components("sd15", "pretrained")
