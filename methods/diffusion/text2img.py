"""The frozen networks of SD-1.5 text-to-image (4-channel UNet): real weights, or random from configs.

The inpainting components (`components.py`) have a 9-channel UNet; methods that generate from noise
(DualAnoDiff) need the plain text-to-image UNet of `stable-diffusion-v1-5/stable-diffusion-v1-5`.
Everything else (VAE, CLIP text encoder, tokenizer, PNDM scheduler, the tiny and full-size random
configs) is the same, so this module reuses `InpaintComponents` as the container.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from acbench.weights import Policy
from acbench_methods.diffusion.components import (
    SD15_TEXT,
    SD15_UNET,
    SD15_VAE,
    SD_SCHEDULER,
    TINY_TEXT_LENGTH,
    TINY_UNET,
    TINY_VAE,
    InpaintComponents,
    Model,
    byte_level_clip_tokenizer,
    load_sd_folder,
    resolve_components,
)

log = logging.getLogger(__name__)

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD15_TEXT2IMG_UNET = {**SD15_UNET, "in_channels": 4}
TINY_TEXT2IMG_UNET = {**TINY_UNET, "in_channels": 4}


def load_text2img_components(folder: str | Path, dtype: torch.dtype | None = None) -> InpaintComponents:
    """SD-1.5 text-to-image components from a diffusers folder (model_index.json layout), offline."""
    return load_sd_folder(folder, dtype, 4, "text-to-image", f"use {SD15_REPO}, not an inpainting checkpoint",
                          "sd15_weights")


def build_text2img_components(
    model: Model,
    policy: Policy = "pretrained",
    path: str | Path | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> InpaintComponents:
    """Frozen SD-1.5 text-to-image networks: `sd15` (resolved by `acbench.weights`; under
    `pretrained-or-random` a miss gives the random full-size architecture), `sd15-arch` (full size,
    random) or `tiny` (small random networks). The UNet has 4 input channels."""
    return resolve_components(model, policy, path, seed, dtype, ("stable-diffusion-v1-5", SD15_REPO),
                              load_text2img_components, _random_text2img)


def _random_text2img(model: str, seed: int) -> InpaintComponents:
    """Random networks of the tiny or the full-size SD-1.5 architecture (same configs as inpainting,
    with the 4-channel text-to-image UNet)."""
    torch.manual_seed(seed)
    if model == "tiny":
        tokenizer = byte_level_clip_tokenizer(TINY_TEXT_LENGTH)
        text_cfg = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37,
                    "num_hidden_layers": 2, "num_attention_heads": 4,
                    "max_position_embeddings": TINY_TEXT_LENGTH, "projection_dim": 32}
        unet_cfg, vae_cfg = TINY_TEXT2IMG_UNET, TINY_VAE
    else:
        tokenizer = byte_level_clip_tokenizer(77)
        text_cfg, unet_cfg, vae_cfg = SD15_TEXT, SD15_TEXT2IMG_UNET, SD15_VAE
    vocab = text_cfg["vocab_size"]
    text = CLIPTextModel(
        CLIPTextConfig(**text_cfg, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    )
    log.warning("RANDOM WEIGHTS for the %s SD-1.5 networks: outputs are not comparable", model)
    return InpaintComponents(
        UNet2DConditionModel(**unet_cfg), AutoencoderKL(**vae_cfg), text, tokenizer,
        PNDMScheduler(**SD_SCHEDULER), random_weights=True, source=f"random:{model}:text2img",
        provenance={"random_weights": True, "architecture": model},
    )
