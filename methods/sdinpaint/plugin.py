"""The `sd-inpaint` synthesis method: a defect painted by a frozen inpainting model from a text prompt."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, field_validator

from acbench.data.category import CategoryData
from acbench.errors import require_folder
from acbench.masks import MaskSourceSpec
from acbench.synthesis import GenerationRequest, Sample, Synthesizer, WeightRequirement
from acbench_methods.diffusion import (
    build_inpaint_components,
    composite,
    resize_mask,
    resize_rgb,
)
from acbench_methods.diffusion.components import SD15_INPAINT_REPO
from acbench_methods.diffusion.speed import FastSampler, SpeedOptions
from acbench_methods.sdinpaint.presets import PRESETS, PROMPT_TEMPLATE, Preset, check_template, render_prompt
from acbench_methods.sdinpaint.sdxl import SDXL_INPAINT_REPO, build_sdxl_inpaint

log = logging.getLogger(__name__)

Paint = Callable[[Sequence[np.ndarray], Sequence[np.ndarray], Sequence[str], Sequence[int]], list[np.ndarray]]


class SDInpaintOptions(SpeedOptions):  # + compile, compile_mode, compile_backend (generation speed)
    model_config = ConfigDict(extra="forbid")

    preset: Literal["sd15", "diag", "tiny", "tiny-diag"] = Field(
        "sd15",
        description="sd15: SD-1.5-inpainting, 50 steps, CFG 7.5, strength 1.0; diag: DIAG's SDXL-inpainting, "
        "30 steps, CFG 20, strength 0.99; tiny / tiny-diag: small random networks (tests, CPU demo)",
    )
    weights_path: Path | None = Field(
        None, description="local diffusers folder of the preset's model (else the HF cache / hub)"
    )
    prompt_template: str = Field(PROMPT_TEMPLATE, description="fields: {object} (category), {defect} (type)")
    negative_prompt: str | None = Field(None, description="override the preset's negative prompt")
    steps: int | None = Field(None, ge=1, description="override the preset's sampling steps")
    guidance: float | None = Field(None, ge=1, description="override the preset's CFG scale")
    strength: float | None = Field(None, gt=0, le=1, description="override the preset's strength")
    resolution: int | None = Field(None, ge=32, description="override the preset's sampling size (multiple of 8)")
    padding_mask_crop: int | None = Field(None, ge=0, description="override the preset's mask crop (0: off)")
    blur_sigma: float = Field(
        0.0, ge=0, description="soft edge inside the mask in px at 512 px (0: hard mask); outside stays exact"
    )
    min_change: float = Field(
        0.0, ge=0, le=1,
        description="resample a sample whose mean |change| inside the mask (0-1 intensity) is below this; 0: off",
    )
    max_attempts: int = Field(3, ge=1, description="paintings per sample at most when min_change > 0")
    batch_size: int = Field(8, ge=1, description="images per pipeline call")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="network dtype: auto = fp16 on CUDA, fp32 elsewhere"
    )
    mask_source: MaskSourceSpec = MaskSourceSpec()

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"resolution {value} is not a multiple of 8 (the VAE's factor)")
        return value


def mean_change(image: np.ndarray, normal: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute change inside the mask, over pixels and channels, as a fraction of 255."""
    if not mask.any():
        return 0.0
    diff = np.abs(image.astype(np.int16) - normal.astype(np.int16))[mask.astype(bool)]
    return float(diff.mean()) / 255.0


def retry_seed(seed: int, attempt: int) -> int:
    """The noise seed of a repeated painting (attempt 0 is the sample's own seed)."""
    if attempt == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), attempt]).generate_state(1)[0] % (2**31 - 1))


def paint_with_rejection(
    paint: Paint,
    normals: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    prompts: Sequence[str],
    seeds: Sequence[int],
    min_change: float = 0.0,
    max_attempts: int = 1,
) -> tuple[list[np.ndarray], list[int], list[float]]:
    """Paint a batch; repaint (new noise, same image, mask and prompt) the samples whose mean change
    inside the mask is below `min_change`, all rejected ones of a round in one call.

    After `max_attempts` paintings the most changed one is kept. Returns (images, paintings per
    sample, final mean change per sample).
    """
    n = len(normals)
    best: list[np.ndarray | None] = [None] * n
    change = [-1.0] * n
    attempts = [0] * n
    todo = list(range(n))
    for attempt in range(max_attempts if min_change > 0 else 1):
        painted = paint([normals[i] for i in todo], [masks[i] for i in todo], [prompts[i] for i in todo],
                        [retry_seed(seeds[i], attempt) for i in todo])
        for i, image in zip(todo, painted):
            attempts[i] += 1
            c = mean_change(image, normals[i], masks[i])
            if c > change[i]:
                best[i], change[i] = image, c
        todo = [i for i in todo if change[i] < min_change]
        if not todo:
            break
    return [b for b in best if b is not None], attempts, change


@dataclasses.dataclass
class Painter:
    """The networks of one job, built once; `paint` composites at each normal image's own size."""

    pipe: Any
    preset: Preset
    options: SDInpaintOptions
    random_weights: bool
    source: str
    sampler: FastSampler = dataclasses.field(init=False)

    def __post_init__(self) -> None:  # SDXL encodes with two text encoders: no shared prompt cache
        self.sampler = FastSampler(self.options, self.options.batch_size, encode_once=not self.preset.is_sdxl)

    def paint(self, normals, masks, prompts, seeds) -> list[np.ndarray]:
        size, p = self.preset.resolution, self.preset
        generated = self.sampler.sample(
            self.pipe,
            [resize_rgb(n, size) for n in normals],
            [resize_mask(m, size) for m in masks],
            prompts,
            seeds,
            p.steps,
            p.strength,
            p.guidance,
            p.negative_prompt,
            padding_mask_crop=p.padding_mask_crop or None,
        )
        out = []
        for image, normal, mask in zip(generated, normals, masks):
            sigma = self.options.blur_sigma * normal.shape[0] / 512
            # `inside`: the soft edge (if any) stays within the mask: every pixel outside is the normal's.
            out.append(composite(resize_rgb(image, normal.shape[:2]), normal, mask, "inside", sigma))
        return out


class SDInpaint(Synthesizer):
    Options = SDInpaintOptions
    fit_scope = "none"
    description = "training-free SD-inpainting from 'a photo of a {object} with a {defect}' (sd15; DIAG's SDXL)"

    def __init__(self, options=None, weights: str = "pretrained") -> None:
        super().__init__(options, weights)
        self._painter: Painter | None = None
        self._device: str | None = None
        self.rejection = {"paintings": 0, "samples": 0, "repainted": 0, "kept_below_threshold": 0}

    @property
    def preset(self) -> Preset:
        o = self.options
        base = PRESETS[o.preset]
        overrides = {
            "steps": o.steps, "guidance": o.guidance, "strength": o.strength, "resolution": o.resolution,
            "negative_prompt": o.negative_prompt, "padding_mask_crop": o.padding_mask_crop,
        }
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def policy(self) -> str:
        return "random" if self.preset.model.startswith("tiny") else self.weights_policy

    def required_weights(self) -> list[WeightRequirement]:
        path = str(self.options.weights_path) if self.options.weights_path else None
        model = self.preset.model
        if model == "sd15":
            return [WeightRequirement("stable-diffusion-inpainting", f"SD-1.5-inpainting ({SD15_INPAINT_REPO})",
                                      repo_id=SD15_INPAINT_REPO, path=path)]
        if model == "sdxl":
            return [WeightRequirement("stable-diffusion-xl-inpainting", f"SDXL-inpainting ({SDXL_INPAINT_REPO})",
                                      repo_id=SDXL_INPAINT_REPO, path=path)]
        return []

    def check(self) -> None:
        if self.options.weights_path is not None:
            require_folder(self.options.weights_path, "method sd-inpaint: options.weights_path",
                           "point it at a diffusers folder of the preset's inpainting model")

    def _dtype(self, device: str) -> torch.dtype:
        mode = self.options.mixed_precision
        if mode == "auto":
            mode = "fp16" if device.startswith("cuda") else "no"
        return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mode]

    def painter(self, device: str = "cpu", seed: int = 0) -> Painter:
        """The networks, built once per instance (a job) and device."""
        if self._painter is None or self._device != device:
            preset, dtype, path = self.preset, self._dtype(device), self.options.weights_path
            if preset.is_sdxl:
                pipe, random_weights, source = build_sdxl_inpaint(preset.model, self.policy, path, seed, dtype)
                pipe.to(device)
            else:
                components = build_inpaint_components(preset.model, self.policy, path, seed, dtype)
                components.to(device, dtype)
                pipe, random_weights, source = components.pipeline(), components.random_weights, components.source
            pipe.set_progress_bar_config(disable=True)
            self._painter = Painter(pipe, preset, self.options, random_weights, source)
            self._device = device
        return self._painter

    def provenance(self) -> dict[str, Any]:
        random = self._painter.random_weights if self._painter else self.policy == "random"
        facts: dict[str, Any] = {"random_weights": random, "preset": self.options.preset,
                                 "settings": dataclasses.asdict(self.preset),
                                 "prompt_template": self.options.prompt_template}
        if self._painter is not None:
            facts["inpainting"] = self._painter.source
            facts["generation_speed"] = self._painter.sampler.facts()
        if self.options.min_change > 0:
            facts["rejection"] = {"min_change": self.options.min_change, **self.rejection}
        return facts

    def prompt(self, data: CategoryData, anomaly_type: str) -> str:
        return render_prompt(self.options.prompt_template, data.category, data.text(anomaly_type))

    def generate(self, data: CategoryData, request: GenerationRequest) -> Iterator[Sample]:
        o, rng = self.options, request.rng()
        painter = self.painter(request.device, request.seed)
        source = o.mask_source.build()
        prompt = self.prompt(data, request.anomaly_type)
        for start in range(0, request.count, o.batch_size):
            # Draw a batch (normal image, target mask, noise seed), paint it in one call; only one batch
            # of images is in memory at a time.
            batch = []
            for _ in range(min(o.batch_size, request.count - start)):
                index = int(rng.integers(len(data.normal_train)))
                normal = data.normal_image(index)
                mask = np.asarray(source.sample(data, request.anomaly_type, normal, rng), dtype=bool)
                batch.append((index, normal, mask, int(rng.integers(2**31 - 1))))
            images, attempts, changes = paint_with_rejection(
                painter.paint, [b[1] for b in batch], [b[2] for b in batch], [prompt] * len(batch),
                [b[3] for b in batch], o.min_change, o.max_attempts,
            )
            self._count(attempts, changes)
            for b, image in zip(batch, images):
                where = data.normal_train[b[0]]
                normal_name = where.relative_to(data.root).as_posix() if data.root in where.parents else where.name
                yield Sample(image, b[2], request.anomaly_type, normal_name)

    def _count(self, attempts: list[int], changes: list[float]) -> None:
        r = self.rejection
        r["samples"] += len(attempts)
        r["paintings"] += sum(attempts)
        r["repainted"] += sum(a > 1 for a in attempts)
        below = sum(c < self.options.min_change for c in changes)
        r["kept_below_threshold"] += below
        if below:
            log.warning("sd-inpaint: %d sample(s) changed less than min_change %.3f inside the mask after "
                        "%d paintings; kept the most changed one", below, self.options.min_change,
                        self.options.max_attempts)


__all__ = ["SDInpaint", "SDInpaintOptions", "mean_change", "paint_with_rejection"]
