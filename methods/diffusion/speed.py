"""Generation speed options shared by the diffusion methods (all keep the model's math; outputs agree with
the eager path within float tolerance, see tests/test_diffusion_speed.py):

- `compile_components`: `torch.compile` of the UNet and of the VAE encoder and decoder, with fixed shapes
  (`dynamic=False`), in place, so a pipeline built before or after uses them. On CUDA the networks are
  channels_last first. `compile_enabled("auto", device)` is on for CUDA and off on the CPU (compiling
  costs tens of seconds and gains little there). Compile once per process and keep one batch size:
  every new shape compiles again.
- padding: `sample_inpaint(..., pad_to=B)` fills a short last batch with copies of its last image, so
  every UNet call has the compiled shape; the copies' outputs are dropped. A sampler that draws a batch's
  noise from one generator pads at its network calls instead (`pad_rows`), so the real rows' noise stays.
- `PromptEmbeddings`: the text encoder runs once per distinct (prompt, negative prompt), not once per
  batch; the pipeline then receives `prompt_embeds`.
- `SpeedOptions` + `FastSampler`: the three above as plugin options (`compile`, `compile_mode`,
  `compile_backend`) and the one sampling call a plugin makes: compile on the first batch, pad every batch
  to the plugin's batch size while compiled, and fall back to eager (one warning) when compiling fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator, model_serializer

from acbench_methods.diffusion.components import InpaintComponents
from acbench_methods.diffusion.inpaint import sample_inpaint

log = logging.getLogger(__name__)

CompileOption = Literal["auto", "on", "off"]
T = TypeVar("T")


def compile_enabled(option: CompileOption, device: str | torch.device) -> bool:
    if option == "auto":
        return torch.device(device).type == "cuda"
    return option == "on"


def compile_networks(unet: torch.nn.Module, vae: torch.nn.Module, device: str | torch.device,
                     mode: str = "default", backend: str = "inductor", fullgraph: bool = True) -> None:
    """Compile the UNet forward and the VAE encoder/decoder in place (`nn.Module.compile`): every holder
    of these modules (a pipeline built before or after) runs the compiled forward. Dynamo compiles lazily,
    so errors surface at the first call (see `FastSampler`)."""
    if torch.device(device).type == "cuda":  # convolution-heavy networks: NHWC is the Tensor-Core layout
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    settings = {"mode": mode, "backend": backend, "fullgraph": fullgraph, "dynamic": False}
    if backend != "inductor":
        settings.pop("mode")
    for module in (unet, vae.encoder, vae.decoder):
        module.compile(**settings)
    log.info("compiled UNet and VAE (%s, %s)", backend, mode)


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether `module` runs a compiled forward (`nn.Module.compile`, as `compile_networks` does)."""
    return module._compiled_call_impl is not None


def uncompile_networks(unet: torch.nn.Module, vae: torch.nn.Module) -> None:
    """Undo `compile_networks`: the modules run their eager forward again. `nn.Module.compile` keeps the
    compiled callable in `_compiled_call_impl` and torch has no public call to drop it; clearing it is
    what `nn.Module.__call__` checks."""
    for module in (unet, vae.encoder, vae.decoder):
        module._compiled_call_impl = None


def compile_components(components: InpaintComponents, device: str | torch.device, mode: str = "default",
                       backend: str = "inductor", fullgraph: bool = True) -> InpaintComponents:
    """`compile_networks` on the components' UNet and VAE, noted in their provenance."""
    compile_networks(components.unet, components.vae, device, mode, backend, fullgraph)
    components.provenance["compiled"] = f"{backend}:{mode}"
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


def pad_rows(x: torch.Tensor, target: int | None) -> torch.Tensor:
    """x ([n, ...]) with its last row repeated up to `target` rows; x itself when target is None or <= n.
    For a sampling loop that pads at its network calls (the noise stays drawn for the n real rows)."""
    extra = 0 if target is None else target - x.shape[0]
    return x if extra <= 0 else torch.cat([x, x[-1:].expand(extra, *x.shape[1:])])


class SpeedOptions(BaseModel):
    """Generation speed options of a diffusion plugin (its options model inherits them). None changes the
    model's math: outputs agree with `compile: off` within float tolerance."""

    compile: CompileOption = Field(
        "auto",
        description="torch.compile the UNet and VAE with fixed shapes, every batch padded to batch_size "
        "(auto: on CUDA only; off: eager). Falls back to eager with a warning if compiling fails",
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode (inductor); reduce-overhead / max-autotune use CUDA graphs"
    )
    compile_backend: Literal["inductor", "aot_eager"] = Field(
        "inductor", description="inductor: generated kernels; aot_eager: graph capture only (a quick CPU check)"
    )

    @model_serializer(mode="wrap")
    def _without_default_speed_options(self, handler: Any) -> dict[str, Any]:
        """Speed options at their defaults are left out of the dump (the options the job hashes are made
        of), so the hashes of studies written before these options existed stay the same: they resume."""
        data = handler(self)
        for name, info in SpeedOptions.model_fields.items():
            if getattr(self, name) == info.default:
                data.pop(name, None)
        for name in self._same_as_before():
            data.pop(name, None)
        return data

    def _same_as_before(self) -> set[str]:
        """A plugin's options (besides the speed ones) left out of the dump because at their current value
        they compute what the plugin computed before the option existed: its earlier jobs resume."""
        return set()

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_switch(cls, value: Any) -> Any:
        """YAML 1.1 (PyYAML) reads an unquoted `on` / `off` as true / false: take them as meant."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class FastSampler:
    """`sample_inpaint` with a plugin's speed options applied; one per job, reused for every batch.

    - compiled (option `compile`): the pipeline's UNet and VAE are compiled before the first batch and
      every batch is padded to `batch_size` images, so one shape is compiled once (a new shape would
      compile again). If that first batch raises (Dynamo compiles lazily: a graph break under fullgraph, a
      backend failure), the networks go back to eager, one warning is logged, and the batch is painted
      eagerly; `facts()` records which path ran (the plugin puts it in its provenance).
    - `encode_once`: text embeddings per distinct prompt are computed once (`PromptEmbeddings`); needs the
      SD-1.x `encode_prompt` (not SDXL's two encoders).

    `sample` serves the diffusers inpainting pipeline; `run` a plugin's own sampling loop (DualAnoDiff).
    """

    def __init__(self, options: SpeedOptions, batch_size: int, encode_once: bool = True) -> None:
        self.options, self.batch_size = options, batch_size
        self.embeddings = PromptEmbeddings() if encode_once else None
        self.state = "new"  # -> eager, or pending -> compiled | failed at the first batch
        self.error: str | None = None

    def sample(self, pipe: Any, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
               prompts: Sequence[str], seeds: Sequence[int], *args: Any, **kwargs: Any) -> list[np.ndarray]:
        """`sample_inpaint(pipe, images, masks, prompts, seeds, *args, **kwargs)`, compiled or eager."""
        def paint(pad_to: int | None) -> list[np.ndarray]:
            return sample_inpaint(pipe, images, masks, prompts, seeds, *args, pad_to=pad_to,
                                  embeddings=self.embeddings, **kwargs)

        unet = getattr(pipe, "unet", None)  # (none in a stand-in for the pipeline: nothing to compile)
        return self.run(unet, getattr(pipe, "vae", None), len(images), paint)

    def run(self, unet: torch.nn.Module | None, vae: torch.nn.Module | None, n: int,
            paint: Callable[[int | None], T]) -> T:
        """`paint(pad_to)` for a batch of n images: compiled (pad_to: the batch size to pad to) or eager
        (pad_to None). For a sampling loop of a plugin's own; `paint` must drop the padded outputs."""
        if self.state == "new":
            compiling = unet is not None and compile_enabled(self.options.compile, unet.device)
            self.state = "pending" if compiling else "eager"
            if not compiling and unet is not None and is_compiled(unet):
                # a base model cached in the process was compiled by an earlier job: this job runs eager
                uncompile_networks(unet, vae)
            if compiling:
                o = self.options
                compile_networks(unet, vae, unet.device, o.compile_mode, o.compile_backend)
                try:
                    out = paint(max(self.batch_size, n))
                except Exception as error:  # any failure of the first compiled call: run eager
                    uncompile_networks(unet, vae)
                    first_line = (str(error).strip().splitlines() or [""])[0]
                    self.state, self.error = "failed", f"{type(error).__name__}: {first_line}"[:300]
                    log.warning("compiling the UNet/VAE failed (%s); generating without compiling", self.error)
                    return paint(None)
                self.state = "compiled"
                return out
        return paint(max(self.batch_size, n) if self.state == "compiled" else None)

    def facts(self) -> dict[str, Any]:
        """For the provenance: the option, whether the UNet ran compiled, and why not if it failed."""
        o = self.options
        out: dict[str, Any] = {"compile": o.compile, "unet_compiled": self.state == "compiled"}
        if self.state in ("pending", "compiled", "failed"):
            out["compiled_with"] = f"{o.compile_backend}:{o.compile_mode}"
            out["padded_batch"] = self.batch_size
        if self.error:
            out["compile_error"] = self.error
        return out
