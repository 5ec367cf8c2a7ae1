"""The frozen networks of SD-1.5-inpainting: loaded from real weights, or random from configs in code."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from acbench.errors import UserError
from acbench.weights import Policy, Resolution, resolve_hf

log = logging.getLogger(__name__)

SD15_INPAINT_REPO = "stable-diffusion-v1-5/stable-diffusion-inpainting"
Model = Literal["sd15", "sd15-arch", "tiny"]

# The SD-1.x noise schedule (scaled-linear betas) with the PNDM sampler SD-inpainting ships with.
SD_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}

# Published configs of runwayml/stable-diffusion-inpainting (unet/, vae/, text_encoder/ config.json).
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 9,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "norm_num_groups": 32,
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "sample_size": 512,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 32,
}
SD15_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}

# Tiny, SD-shaped (4 UNet levels, VAE factor 8): a 64 px image is an 8x8 latent; seconds on a CPU.
TINY_UNET = {
    "sample_size": 8,
    "in_channels": 9,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 32, 64, 64),
    "attention_head_dim": 8,
    "cross_attention_dim": 32,
    "down_block_types": SD15_UNET["down_block_types"],
    "up_block_types": SD15_UNET["up_block_types"],
    "norm_num_groups": 8,
}
TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "sample_size": 64,
    "block_out_channels": (16, 16, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 8,
}
TINY_TEXT_LENGTH = 77


class InpaintPipeline(StableDiffusionInpaintPipeline):
    """SD-inpainting where each image of a batch may bring its own IP-Adapter embedding.

    diffusers repeats `ip_adapter_image_embeds` for every image of the batch (one reference image
    shared by all prompts), so per-image embeddings of a batch of B would become B*B rows and mix
    across images. Here embeddings that already hold one row per image are used as they are; any
    other shape keeps the library's behaviour.
    """

    def prepare_ip_adapter_image_embeds(
        self, ip_adapter_image, ip_adapter_image_embeds, device, num_images, do_classifier_free_guidance
    ):
        if ip_adapter_image_embeds is not None:
            rows = [e.shape[0] // (2 if do_classifier_free_guidance else 1) for e in ip_adapter_image_embeds]
            if all(r == num_images for r in rows):
                return [e.to(device) for e in ip_adapter_image_embeds]
        return super().prepare_ip_adapter_image_embeds(
            ip_adapter_image, ip_adapter_image_embeds, device, num_images, do_classifier_free_guidance
        )


@dataclass
class InpaintComponents:
    """Frozen SD-inpainting networks. `random_weights` is True when nothing pretrained was loaded."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: PNDMScheduler
    random_weights: bool
    source: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> InpaintComponents:
        for module in (self.unet, self.vae, self.text_encoder):
            if dtype is None or module.dtype == dtype:
                module.to(device=device)
            else:
                module.to(device=device, dtype=dtype)
        return self

    def freeze(self) -> InpaintComponents:
        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False).eval()
        return self

    def pipeline(self) -> InpaintPipeline:
        pipe = InpaintPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def byte_level_clip_tokenizer(model_max_length: int) -> CLIPTokenizer:
    """A CLIP tokenizer over the 512 byte symbols (no merges): exact CLIP conventions, no vocab file.

    Used with random-weight text encoders, where the BPE vocabulary carries no meaning anyway.
    """
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={t: i for i, t in enumerate(vocab)}, merges=[], model_max_length=model_max_length
    )


def _random_components(model: Model, seed: int) -> InpaintComponents:
    torch.manual_seed(seed)
    if model == "tiny":
        tokenizer = byte_level_clip_tokenizer(TINY_TEXT_LENGTH)
        text_cfg = {
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": TINY_TEXT_LENGTH,
            "projection_dim": 32,
        }
        unet_cfg, vae_cfg = TINY_UNET, TINY_VAE
    else:  # the full-size architecture; speed does not depend on the weight values
        tokenizer = byte_level_clip_tokenizer(77)
        text_cfg, unet_cfg, vae_cfg = SD15_TEXT, SD15_UNET, SD15_VAE
    vocab = text_cfg["vocab_size"]
    text = CLIPTextModel(
        CLIPTextConfig(**text_cfg, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    )
    log.warning("RANDOM WEIGHTS for the %s inpainting networks: outputs are not comparable", model)
    return InpaintComponents(
        UNet2DConditionModel(**unet_cfg),
        AutoencoderKL(**vae_cfg),
        text,
        tokenizer,
        PNDMScheduler(**SD_SCHEDULER),
        random_weights=True,
        source=f"random:{model}",
        provenance={"random_weights": True, "architecture": model},
    )


def load_sd_folder(folder: str | Path, dtype: torch.dtype | None, in_channels: int, kind: str, use: str,
                   provenance_key: str) -> InpaintComponents:
    """Stable Diffusion components from a diffusers folder (model_index.json layout), offline, checked:
    every part present, a UNet with `in_channels` inputs (9 inpainting, 4 text-to-image), a real tokenizer."""
    folder = str(folder)
    kw = {"local_files_only": True}
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, **kw)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **kw)
        text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, **kw)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **kw)
        scheduler = PNDMScheduler.from_pretrained(folder, subfolder="scheduler", **kw)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{folder}: not a complete {kind} folder ({str(exc).splitlines()[0]}); "
            f"it needs unet/, vae/, text_encoder/, tokenizer/, scheduler/"
        ) from None
    if unet.config.in_channels != in_channels:
        raise UserError(
            f"{folder}: UNet has {unet.config.in_channels} input channels, a {kind} UNet has {in_channels}; {use}"
        )
    # transformers silently builds a 2-token tokenizer when its files are missing: check it.
    if len(tokenizer) != text.config.vocab_size:
        raise UserError(
            f"{folder}/tokenizer: {len(tokenizer)} tokens for a text encoder of "
            f"{text.config.vocab_size}; the tokenizer files are missing or corrupt"
        )
    return InpaintComponents(unet, vae, text, tokenizer, scheduler, random_weights=False, source=folder,
                             provenance={"random_weights": False, provenance_key: folder})


def load_inpaint_components(folder: str | Path, dtype: torch.dtype | None = None) -> InpaintComponents:
    """SD-inpainting components from a diffusers folder (model_index.json layout), offline."""
    return load_sd_folder(folder, dtype, 9, "SD-inpainting",
                          f"use an SD-inpainting checkpoint such as {SD15_INPAINT_REPO}", "inpainting_weights")


def build_inpaint_components(
    model: Model,
    policy: Policy = "pretrained",
    path: str | Path | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> InpaintComponents:
    """The frozen inpainting networks for a preset.

    `sd15`: real SD-1.5-inpainting weights resolved by `acbench.weights` (explicit `path`, HF cache,
    download); under `pretrained-or-random` a miss falls back to the random full-size architecture.
    `sd15-arch`: the full-size architecture with random weights. `tiny`: small random networks.
    """
    return resolve_components(model, policy, path, seed, dtype, ("stable-diffusion-inpainting", SD15_INPAINT_REPO),
                              load_inpaint_components, _random_components)


def resolve_components(model: str, policy: Policy, path: str | Path | None, seed: int, dtype: torch.dtype | None,
                       weight: tuple[str, str], load: Callable[..., InpaintComponents],
                       random: Callable[[str, int], InpaintComponents]) -> InpaintComponents:
    """Frozen components of a preset: `sd15` from the weights `weight` (name, hub repo) resolves to, or,
    where the policy gives random weights, the full-size `sd15-arch` built by `random`; other presets random."""
    if model == "sd15":
        resolution: Resolution = resolve_hf(*weight, policy, path)
        if not resolution.is_random:
            return load(resolution.path, dtype).freeze()
        model = "sd15-arch"
    components = random(model, seed)
    if dtype is not None:
        components.to("cpu", dtype)
    return components.freeze()
