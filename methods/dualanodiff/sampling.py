"""Two-branch sampling and the anomaly mask.

Sampling (as the official `pipeline_stable_diffusion.py` with `prompt_blend` / `prompt_fg`): both
branches of every image start from their own Gaussian noise and are denoised together, the rows laid
out as (image, branch) pairs, with classifier-free guidance against the empty prompt on both branches
and the checkpoint's scheduler (PNDM for SD-1.5). For `bcm`, before each UNet call a reference pass
runs over the image's normal picture noised to the current timestep. One CPU generator per image
draws all of that image's noise, so an image does not depend on the batch it was generated in.

Mask: the official code runs U2-Net salient-object detection on the anomaly-branch image; its
binarisation threshold is not in the repository. acbench's default is a documented threshold on the
anomaly branch, whose background is black by training: a pixel is anomalous when its brightest
channel exceeds `mask_threshold` x 255. With `saliency_model` (U2-Net exported with TorchScript or
`torch.export` (.pt2), or any saliency network returning a map first), the map is min-max
normalised as U2-Net's test script does and thresholded at `saliency_threshold`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from acbench_methods.diffusion import InpaintComponents
from acbench_methods.dualanodiff.attention import BRANCHES, DualAdapter
from acbench_methods.dualanodiff.train import dual_unet, encode_prompts


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(pixels)


@torch.no_grad()
def sample_pairs(components: InpaintComponents, adapter: DualAdapter, prompts: tuple[str, str],
                 seeds: Sequence[int], resolution: int, steps: int, guidance: float,
                 normals: torch.Tensor | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(whole images, anomaly-only images), uint8 R x R x 3, for one batch of seeds in one loop.

    `normals` (B x 3 x R x R in [-1, 1]) are the reference images of the `bcm` variant.
    """
    unet, vae = components.unet, components.vae
    device, dtype, scale = unet.device, unet.dtype, vae.config.scaling_factor
    n = len(seeds)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    latent = resolution // components.vae_scale_factor
    shape = (BRANCHES, unet.config.in_channels, latent, latent)
    scheduler = type(components.scheduler).from_config(components.scheduler.config)
    scheduler.set_timesteps(steps, device=device)
    latents = torch.cat([torch.randn(shape, generator=g) for g in gens]).to(device, dtype)
    latents = latents * scheduler.init_noise_sigma
    cfg = guidance > 1
    states = encode_prompts(components, [*prompts, "", ""]).to(dtype)
    cond = states[:BRANCHES].repeat(n, 1, 1)
    text = torch.cat([states[BRANCHES:].repeat(n, 1, 1), cond]) if cfg else cond
    reference_latents = None
    if normals is not None and adapter.bcm:
        reference_latents = vae.encode(normals.to(device, vae.dtype)).latent_dist.mode() * scale
        noiser = DDPMScheduler.from_config(components.scheduler.config)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
        timesteps = t.expand(model_input.shape[0]).to(device)
        reference = None
        if reference_latents is not None:
            noise = torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in gens]).to(device, dtype)
            reference = noiser.add_noise(reference_latents.to(dtype), noise, t.expand(n).to(device))
            reference = torch.cat([reference] * 2) if cfg else reference
        eps = dual_unet(components, adapter, model_input, timesteps, text, reference)
        if cfg:
            uncond, conditional = eps.chunk(2)
            eps = uncond + guidance * (conditional - uncond)
        latents = scheduler.step(eps, t, latents).prev_sample
    images = vae.decode(latents.to(vae.dtype) / scale).sample
    pixels = _to_uint8(images)
    return pixels[0::BRANCHES], pixels[1::BRANCHES]


def threshold_mask(fg: np.ndarray, threshold: float) -> np.ndarray:
    """Anomalous where the anomaly branch's brightest channel exceeds threshold x 255."""
    return fg.max(axis=2).astype(np.float32) > threshold * 255


class SaliencyMask:
    """A TorchScript saliency network (e.g. an export of U2-Net) applied as U2-Net's test script does:
    320 x 320 input normalised by its maximum and the ImageNet mean/std, the first output map,
    min-max normalised, resized back, thresholded."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, path: Path, threshold: float = 0.5, device: str = "cpu") -> None:
        if Path(path).suffix == ".pt2":  # a torch.export program
            self.net = torch.export.load(str(path)).module().to(device)
        else:  # a TorchScript file
            self.net = torch.jit.load(str(path), map_location=device).eval()
        self.threshold, self.device = threshold, device

    @torch.no_grad()
    def __call__(self, fg: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(fg).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(320, 320), mode="bilinear", align_corners=False)
        x = x / max(float(x.max()), 1e-8)
        x = (x - torch.tensor(self.MEAN)[:, None, None]) / torch.tensor(self.STD)[:, None, None]
        out = self.net(x.to(self.device))
        while isinstance(out, (tuple, list)):
            out = out[0]
        d = out.float().cpu()[:, :1]
        d = (d - d.min()) / max(float(d.max() - d.min()), 1e-8)
        d = F.interpolate(d, size=fg.shape[:2], mode="bilinear", align_corners=False)
        return d[0, 0].numpy() > self.threshold
