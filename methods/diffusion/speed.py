"""Generation speed options shared by the diffusion methods (all keep the model's math; outputs agree with
the eager path within float tolerance, see tests/test_diffusion_speed.py):

- `compile_components`: `torch.compile` of the UNet and of the VAE encoder and decoder, with fixed shapes
  (`dynamic=False`), in place, so a pipeline built before or after uses them. On CUDA the networks are
  channels_last first. `compile_enabled("auto", device)` is on for CUDA and off on the CPU (compiling
  costs tens of seconds and gains little there). Compile once per process and keep one batch size:
  every new shape compiles again.
- padding: `sample_inpaint(..., pad_to=B)` fills a short last batch with copies of its last image, so
  every UNet call has the compiled shape; the copies' outputs are dropped.
- `PromptEmbeddings`: the text encoder runs once per distinct (prompt, negative prompt), not once per
  batch; the pipeline then receives `prompt_embeds`.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

from acbench_methods.diffusion.components import InpaintComponents

log = logging.getLogger(__name__)

CompileOption = Literal["auto", "on", "off"]


def compile_enabled(option: CompileOption, device: str | torch.device) -> bool:
    if option == "auto":
        return torch.device(device).type == "cuda"
    return option == "on"


def compile_components(components: InpaintComponents, device: str | torch.device, mode: str = "default",
                       backend: str = "inductor", fullgraph: bool = True) -> InpaintComponents:
    """Compile the UNet forward and the VAE encoder/decoder in place (`nn.Module.compile`)."""
    if torch.device(device).type == "cuda":  # convolution-heavy networks: NHWC is the Tensor-Core layout
        components.unet.to(memory_format=torch.channels_last)
        components.vae.to(memory_format=torch.channels_last)
    settings = {"mode": mode, "backend": backend, "fullgraph": fullgraph, "dynamic": False}
    if backend != "inductor":
        settings.pop("mode")
    for module in (components.unet, components.vae.encoder, components.vae.decoder):
        module.compile(**settings)
    components.provenance["compiled"] = f"{backend}:{mode}"
    log.info("compiled UNet and VAE (%s, %s)", backend, mode)
    return components


class PromptEmbeddings:
    """Text embeddings per (prompt, negative prompt), computed once with the pipeline's own encoder."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str | None, bool], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def get(self, pipe, prompts: list[str], negative: str | None, guidance: float) -> dict[str, torch.Tensor]:
        cfg = guidance > 1
        rows, negatives = [], []
        for prompt in prompts:
            key = (prompt, negative, cfg)
            if key not in self.cache:
                with torch.no_grad():
                    self.cache[key] = pipe.encode_prompt(prompt, pipe._execution_device, 1, cfg, negative)
            positive, neg = self.cache[key]
            rows.append(positive)
            negatives.append(neg)
        out = {"prompt_embeds": torch.cat(rows)}
        if cfg:
            out["negative_prompt_embeds"] = torch.cat(negatives)
        return out


def pad_embeds(embeds: list[torch.Tensor], n: int, target: int) -> list[torch.Tensor]:
    """IP-Adapter embeddings of n images (rows: n, or 2n = [unconditional; conditional]) padded to `target`
    images by repeating each half's last row."""
    out = []
    for e in embeds:
        halves = e.chunk(2) if e.shape[0] == 2 * n else (e,)
        out.append(torch.cat([torch.cat([h, h[-1:].expand(target - n, *h.shape[1:])]) for h in halves]))
    return out
