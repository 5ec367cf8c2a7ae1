"""Inpainting inputs for training, seeded batched sampling, and compositing onto the original."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionInpaintPipeline
from PIL import Image
from scipy import ndimage

CompositeMode = Literal["inside", "blurred", "off"]


def inpaint_latents(
    vae: AutoencoderKL, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents of the images, the masks at latent resolution, and latents of the masked images.

    `images` are Bx3xHxW in [-1, 1], `masks` Bx1xHxW in {0, 1} (1 = region to paint). Mirrors
    `StableDiffusionInpaintPipeline`: the masked image keeps pixels where mask < 0.5, and the mask is
    resized to the latent grid with nearest interpolation. The UNet input is
    `cat([noisy_latents, mask_latent, masked_latents], dim=1)` (9 channels).
    """
    scale = vae.config.scaling_factor
    masked = images * (masks < 0.5)
    both = vae.encode(torch.cat([images, masked]).to(vae.dtype)).latent_dist.sample(generator) * scale
    latents, masked_latents = both.chunk(2)
    mask_latent = F.interpolate(masks.float(), size=latents.shape[-2:]).to(latents.dtype)
    return latents, mask_latent, masked_latents


def sample_inpaint(
    pipe: StableDiffusionInpaintPipeline,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = 50,
    strength: float = 0.7,
    guidance: float = 7.0,
    negative_prompt: str | None = None,
    padding_mask_crop: int | None = None,
    pad_to: int | None = None,
    embeddings: Any = None,
    **pipe_kwargs: Any,
) -> list[np.ndarray]:
    """Inpaint a batch in one pipeline call; returns uint8 HxWx3 images at the input size.

    One CPU generator per image (seeded with its own seed) draws that image's noise, so an image is
    the same whether it is generated alone or in a batch, and on any device. `padding_mask_crop`
    (diffusers' option: paint a crop around the mask, padded by that many pixels, at full resolution)
    works on one image per call in diffusers, so the batch is then painted image by image (and not
    padded). `pad_to` and `embeddings` are the speed options of `acbench_methods.diffusion.speed` (fixed
    batch shape, prompts encoded once).
    """
    n = len(images)
    # fixed shapes for a compiled UNet: the extra outputs are dropped
    if pad_to is not None and n < pad_to and not padding_mask_crop:
        from acbench_methods.diffusion.speed import pad_embeds

        extra = pad_to - n
        images, masks = list(images) + [images[-1]] * extra, list(masks) + [masks[-1]] * extra
        prompts, seeds = list(prompts) + [prompts[-1]] * extra, list(seeds) + [seeds[-1]] * extra
        if "ip_adapter_image_embeds" in pipe_kwargs:
            pipe_kwargs["ip_adapter_image_embeds"] = pad_embeds(pipe_kwargs["ip_adapter_image_embeds"], n, pad_to)
    size = images[0].shape[0]
    if padding_mask_crop:
        out = []
        for image, mask, prompt, seed in zip(images, masks, prompts, seeds):
            painted = pipe(
                prompt=prompt,
                image=Image.fromarray(image),
                mask_image=Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255),
                height=size,
                width=size,
                num_inference_steps=steps,
                strength=strength,
                guidance_scale=guidance,
                negative_prompt=negative_prompt,
                generator=torch.Generator("cpu").manual_seed(int(seed)),
                padding_mask_crop=padding_mask_crop,
                output_type="pil",
                **pipe_kwargs,
            ).images[0]
            out.append(np.asarray(painted.convert("RGB").resize((image.shape[1], image.shape[0]), Image.BICUBIC)))
        return out[:n]
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    negative = None if negative_prompt is None else [negative_prompt] * len(images)
    if embeddings is not None:  # a `PromptEmbeddings`: the text encoder ran once per distinct prompt
        pipe_kwargs.update(embeddings.get(pipe, list(prompts), negative_prompt, guidance))
        prompts, negative = None, None
    out = pipe(
        prompt=None if prompts is None else list(prompts),
        image=[Image.fromarray(i) for i in images],
        mask_image=[Image.fromarray(np.asarray(m, dtype=np.uint8) * 255) for m in masks],
        height=size,
        width=size,
        num_inference_steps=steps,
        strength=strength,
        guidance_scale=guidance,
        negative_prompt=negative,
        generator=generators,
        output_type="np",
        **pipe_kwargs,
    ).images
    return [np.clip(np.rint(im * 255), 0, 255).astype(np.uint8) for im in out[:n]]


def composite(
    generated: np.ndarray,
    original: np.ndarray,
    mask: np.ndarray,
    mode: CompositeMode = "inside",
    sigma: float = 5.0,
) -> np.ndarray:
    """Blend generated pixels onto the original under a soft mask (sigma in pixels).

    `inside`: the soft edge stays within the mask, so every pixel outside it is the original's (the
    VAE round trip cannot add a false anomaly outside the mask). `blurred`: the Gaussian-blurred mask
    as in the AnomalyControl code (also softens a halo just outside the mask). `off`: unchanged.
    """
    if mode == "off":
        return generated
    hard = mask.astype(np.float32)
    soft = ndimage.gaussian_filter(hard, sigma) if sigma > 0 else hard
    if mode == "inside":
        soft = np.where(mask, np.maximum(soft, 0.5), 0.0)
    alpha = soft[..., None]
    out = generated.astype(np.float32) * alpha + original.astype(np.float32) * (1 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_rgb(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a uint8 HxWx3 image to `size` (square side, or (height, width))."""
    h, w = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool HxW mask."""
    h, w = (size, size) if isinstance(size, int) else size
    if mask.shape == (h, w):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) >= 128
