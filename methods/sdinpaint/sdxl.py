"""The networks of SDXL-inpainting (DIAG's model): loaded from real weights, or random from configs in code."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from acbench.errors import UserError
from acbench.weights import Policy, resolve_hf
from acbench_methods.diffusion.components import SD15_TEXT, SD15_VAE, TINY_VAE, byte_level_clip_tokenizer

log = logging.getLogger(__name__)

SDXL_INPAINT_REPO = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
Model = Literal["sdxl", "sdxl-arch", "tiny-sdxl"]

# Published configs of diffusers/stable-diffusion-xl-1.0-inpainting-0.1 (unet/, text_encoder_2/,
# scheduler/ config.json): a 3-level UNet with 9 input channels conditioned on both text encoders
# (768 + 1280 = 2048) and on the pooled text + 6 size/crop numbers (1280 + 6 * 256 = 2816).
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 9,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_TEXT_2 = {  # OpenCLIP ViT-bigG/14 text tower
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
SDXL_VAE = {**SD15_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
SDXL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
}
# Tiny, SDXL-shaped (two text encoders, text_time conditioning, VAE factor 8): 64 px -> 8x8 latent.
TINY_SDXL_UNET = {
    "sample_size": 8,
    "in_channels": 9,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "attention_head_dim": (2, 4),
    "transformer_layers_per_block": (1, 2),
    "cross_attention_dim": 64,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,
    "norm_num_groups": 8,
}
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
}


def _text_config(cfg: dict, tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    vocab = len(tokenizer)
    return CLIPTextConfig(
        **{**cfg, "vocab_size": vocab}, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1
    )


def random_sdxl_inpaint(model: Model, seed: int = 0) -> StableDiffusionXLInpaintPipeline:
    """SDXL-inpainting with random weights: the full architecture (`sdxl-arch`) or a tiny one."""
    torch.manual_seed(seed)
    tiny = model == "tiny-sdxl"
    tokenizer = byte_level_clip_tokenizer(77)
    text_1 = TINY_TEXT if tiny else SD15_TEXT
    text_2 = TINY_TEXT if tiny else SDXL_TEXT_2
    log.warning("RANDOM WEIGHTS for the %s inpainting networks: outputs are not comparable", model)
    pipe = StableDiffusionXLInpaintPipeline(
        vae=AutoencoderKL(**(TINY_VAE if tiny else SDXL_VAE)),
        text_encoder=CLIPTextModel(_text_config(text_1, tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(text_2, tokenizer)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=UNet2DConditionModel(**(TINY_SDXL_UNET if tiny else SDXL_UNET)),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return pipe


def load_sdxl_inpaint(folder: str | Path, dtype: torch.dtype | None = None) -> StableDiffusionXLInpaintPipeline:
    """SDXL-inpainting from a diffusers folder (model_index.json layout), offline, without watermarking."""
    try:
        pipe = StableDiffusionXLInpaintPipeline.from_pretrained(
            str(folder), dtype=dtype, local_files_only=True, add_watermarker=False
        )
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(
            f"{folder}: not a complete SDXL-inpainting folder ({str(exc).splitlines()[0]}); "
            f"download {SDXL_INPAINT_REPO}"
        ) from None
    if pipe.unet.config.in_channels != 9:
        raise UserError(
            f"{folder}: UNet has {pipe.unet.config.in_channels} input channels, an inpainting UNet has 9; "
            f"use {SDXL_INPAINT_REPO}"
        )
    # transformers silently builds a 2-token tokenizer when its files are missing: check both.
    for tok, enc, sub in ((pipe.tokenizer, pipe.text_encoder, "tokenizer"), (pipe.tokenizer_2, pipe.text_encoder_2,
                                                                           "tokenizer_2")):
        if len(tok) != enc.config.vocab_size:
            raise UserError(
                f"{folder}/{sub}: {len(tok)} tokens for a text encoder of {enc.config.vocab_size}; "
                "the tokenizer files are missing or corrupt"
            )
    return pipe


def build_sdxl_inpaint(
    model: Model, policy: Policy = "pretrained", path: str | Path | None = None, seed: int = 0,
    dtype: torch.dtype | None = None,
) -> tuple[StableDiffusionXLInpaintPipeline, bool, str]:
    """(pipeline, random_weights, source). `sdxl` resolves real weights through `acbench.weights`
    (explicit folder, HF cache, download); under `pretrained-or-random` a miss gives the random
    full-size architecture (`sdxl-arch`). `tiny-sdxl`: small random networks for tests."""
    if model == "sdxl":
        resolution = resolve_hf("stable-diffusion-xl-inpainting", SDXL_INPAINT_REPO, policy, path)
        if not resolution.is_random:
            return load_sdxl_inpaint(resolution.path, dtype), False, str(resolution.path)
        model = "sdxl-arch"
    pipe = random_sdxl_inpaint(model, seed)
    if dtype is not None and dtype != pipe.unet.dtype:
        pipe.to(dtype=dtype)
    return pipe, True, f"random:{model}"
