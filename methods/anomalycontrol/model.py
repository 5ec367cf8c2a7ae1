"""AnomalyControl assembled: frozen SD-inpainting + CSM/ASEA features + the SGA adapter, batched inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acbench.weights import Policy
from acbench_methods.anomalycontrol.ablations import VARIANTS, Variant
from acbench_methods.anomalycontrol.cache import FeatureCache, Reference, default_cache_dir
from acbench_methods.anomalycontrol.csm import CrossModalSemantics
from acbench_methods.anomalycontrol.options import AnomalyControlOptions
from acbench_methods.anomalycontrol.presets import MODELS, SCHEDULES, ModelPreset, build_csm, resolve_ip_adapter
from acbench_methods.anomalycontrol.sga import SemanticGuidedAdapter
from acbench_methods.diffusion import (
    InpaintComponents,
    build_inpaint_components,
    composite,
    resize_mask,
    resize_rgb,
)
from acbench_methods.diffusion.speed import FastSampler


def compute_dtype(device: str) -> torch.dtype:
    return torch.float16 if str(device).startswith("cuda") else torch.float32


@dataclass
class AnomalyControlModel:
    """The networks of one job, built once: generation calls reuse them for every batch."""

    options: AnomalyControlOptions
    preset: ModelPreset
    components: InpaintComponents
    csm: CrossModalSemantics | None
    adapter: SemanticGuidedAdapter | None
    cache: FeatureCache
    device: str = "cpu"
    provenance: dict[str, Any] = field(default_factory=dict)
    _pipeline: Any = field(default=None, init=False, repr=False)
    _sampler: FastSampler | None = field(default=None, init=False, repr=False)

    @classmethod
    def build(
        cls,
        options: AnomalyControlOptions,
        policy: Policy = "pretrained",
        device: str = "cpu",
        seed: int = 0,
        architecture: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> AnomalyControlModel:
        """Build every network once, on `device` in `dtype` (default: fp16 on CUDA, else fp32).

        `architecture` overrides the preset's networks (e.g. `sd15-arch`: full size, random weights).
        """
        options = options.resolved()
        preset = MODELS[architecture or options.model]
        dtype = dtype or compute_dtype(device)
        components = build_inpaint_components(
            preset.diffusion, policy, options.sd_inpainting_path, seed, dtype
        )
        components.to(device, dtype)
        csm, adapter, csm_random, sga_init = None, None, False, "none"
        if VARIANTS[options.ablation].sga:
            csm_model = (
                "tiny" if preset.diffusion == "tiny" else ("sd15" if preset.diffusion == "sd15" else "arch")
            )
            csm, csm_random = build_csm(csm_model, policy, options.blip2_path, seed)
            csm.cleaning = options.caption_cleaning
            csm.model.to(device)
            # official: the ViT-g in fp32 (the released code runs LAVIS after `.float()`)
            csm.model.vision_model.to(torch.float32 if options.csm_precision == "fp32" else dtype)
            adapter = SemanticGuidedAdapter(
                components.unet, csm.feature_dim, preset.proj_dim, preset.num_tokens
            )
            sga_init = initialise_adapter(adapter, options, policy)
            adapter.to(device, dtype)
            adapter.attach(components.unet)
        random_weights = components.random_weights or csm_random
        provenance = {
            "random_weights": random_weights,
            "preset": options.preset,
            "model": options.model,
            "ablation": options.ablation,
            "inpainting": components.source,
            "csm_random_weights": csm_random,
            "csm": None if csm is None else csm.source,
            "sga_init": sga_init,
        }
        cache = FeatureCache(options.cache_dir or default_cache_dir())
        return cls(options, preset, components, csm, adapter, cache, device, provenance)

    # ------------------------------------------------------------------ CSM features
    @property
    def variant(self) -> Variant:
        """What the ablation switches off (`ablations.VARIANTS`, also read by the report)."""
        return VARIANTS[self.options.ablation]

    @property
    def csm_settings(self) -> str:
        opts = self.options
        return (
            f"text={self.variant.csm};asea={self.asea_steps};lr={opts.asea_lr};grid=pil-nearest;"
            f"clean={opts.caption_cleaning};vit={self.csm.model.vision_model.dtype}"
        )

    @property
    def asea_steps(self) -> int:
        return self.options.asea_steps if self.variant.asea else 0

    def reference_features(self, refs: Sequence[Reference]) -> torch.Tensor:
        """CSM features (N x dim, CPU) of reference anomalies, through the cache."""
        use_text = self.variant.csm
        refs = [r.for_csm(self.options.csm_image == "raw") for r in refs]

        def compute(batch: list[Reference]) -> torch.Tensor:
            return self.csm(
                [r.image for r in batch],
                [r.caption for r in batch] if use_text else None,
                [r.mask for r in batch],
                self.asea_steps,
                self.options.asea_lr,
            ).features

        return self.cache.get_or_compute(self.csm.fingerprint(), refs, self.csm_settings, compute)

    # ------------------------------------------------------------------ inference
    @property
    def inference_steps(self) -> int:
        return self.options.steps or SCHEDULES[self.options.schedule].inference_steps

    def pipeline(self):
        """The inpainting pipeline over the components (built on first use, then reused)."""
        if self._pipeline is None:
            self._pipeline = self.components.pipeline()
        return self._pipeline

    def sampler(self) -> FastSampler:
        """The speed options (`compile`, prompts encoded once) applied to every batch of this model."""
        if self._sampler is None:
            self._sampler = FastSampler(self.options, self.options.batch_size)
        return self._sampler

    def speed_facts(self) -> dict[str, Any] | None:
        """How generation ran (compiled or eager, `FastSampler.facts`); None before the first batch."""
        return None if self._sampler is None else self._sampler.facts()

    def generate(
        self,
        normals: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        prompts: Sequence[str],
        seeds: Sequence[int],
        features: torch.Tensor | None = None,
    ) -> list[np.ndarray]:
        """Paint one defect per normal image under its mask, in one batched pipeline call.

        Images of any size are sampled at the preset's resolution and returned at their own size,
        composited onto the original under the target mask (option `composite`).
        """
        size, opts = self.preset.resolution, self.options
        kwargs: dict[str, Any] = {}
        if self.adapter is not None:
            self.adapter.set_scale(opts.scale)
            positive = features.to(self.device)[:, None]
            embeds = torch.cat([torch.zeros_like(positive), positive]) if opts.guidance > 1 else positive
            kwargs["ip_adapter_image_embeds"] = [embeds]
        generated = self.sampler().sample(
            self.pipeline(),
            [resize_rgb(n, size) for n in normals],
            [resize_mask(m, size) for m in masks],
            prompts,
            seeds,
            self.inference_steps,
            opts.strength,
            opts.guidance,
            opts.negative_prompt,
            **kwargs,
        )
        out = []
        for image, normal, mask in zip(generated, normals, masks):
            if opts.composite_at == "model":  # as released: blend at the diffusion size, then resize
                blended = composite(
                    image, resize_rgb(normal, size), resize_mask(mask, size), opts.composite,
                    opts.blur_sigma * size / 512,
                )  # fmt: skip
                out.append(resize_rgb(blended, normal.shape[:2]))
                continue
            image = resize_rgb(image, normal.shape[:2])
            sigma = opts.blur_sigma * normal.shape[0] / 512
            out.append(composite(image, normal, mask, opts.composite, sigma))
        return out

    def save_adapter(self, path: Path) -> None:
        self.adapter.save(path)

    def load_adapter(self, path: Path) -> None:
        self.adapter.load(path)


def initialise_adapter(adapter: SemanticGuidedAdapter, options: AnomalyControlOptions, policy: Policy) -> str:
    """Start SGA as the preset says: IP-Adapter SD-1.5 weights over the text-K/V copies (official), or
    the copies alone. The tiny model has no IP-Adapter of its size: it keeps the copies."""
    if options.sga_init != "ip-adapter" or (options.model == "tiny" and options.ip_adapter_path is None):
        return "text-kv"
    resolution = resolve_ip_adapter(policy, options.ip_adapter_path)
    if resolution.is_random:
        return "text-kv (IP-Adapter not found)"
    adapter.load_ip_adapter(resolution.path)
    return f"ip-adapter ({resolution.source}: {resolution.path})"
