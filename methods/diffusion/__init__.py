"""Stable-Diffusion inpainting building blocks shared by the diffusion-based synthesis methods.

The API is deliberately small:

- `build_inpaint_components(model, policy, path)`: the frozen networks of SD-1.5-inpainting
  (UNet with 9 input channels, VAE, CLIP text encoder + tokenizer, scheduler) loaded from a weights
  folder / the HF cache / a hub id through `acbench.weights.resolve_hf`, or built with random weights
  from configs in code (`tiny` for tests and the CPU demo, `sd15-arch` for the full-size
  architecture, e.g. for speed benchmarks). `InpaintComponents.random_weights` says which.
- `InpaintComponents.pipeline()`: a diffusers `StableDiffusionInpaintPipeline` over those components
  (`InpaintPipeline`, which also accepts one IP-Adapter embedding per image of a batch).
- `inpaint_latents(...)`: the UNet's extra inputs (mask at latent resolution, latents of the masked
  image), computed exactly like the pipeline does, for training.
- `sample_inpaint(...)`: seeded, batched sampling; one generator per image, so an image does not
  depend on which batch it was in.
- `composite(...)`: put the generated pixels back onto the original outside the mask.
- `resize_rgb(...)`, `resize_mask(...)`: to and from the sampling resolution.
"""

from acbench_methods.diffusion.components import InpaintComponents, InpaintPipeline, build_inpaint_components
from acbench_methods.diffusion.inpaint import composite, inpaint_latents, resize_mask, resize_rgb, sample_inpaint

__all__ = [
    "InpaintComponents",
    "InpaintPipeline",
    "build_inpaint_components",
    "composite",
    "inpaint_latents",
    "resize_mask",
    "resize_rgb",
    "sample_inpaint",
]
