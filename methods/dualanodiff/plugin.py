"""The `dualanodiff` synthesis method: one adapter per (category, type), two-branch batched generation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import ConfigDict, Field

from acbench.data.category import CategoryData
from acbench.errors import UserError
from acbench.protocol import config_hash
from acbench.synthesis import GenerationRequest, Sample, Synthesizer, WeightRequirement
from acbench_methods.diffusion import InpaintComponents
from acbench_methods.diffusion.speed import FastSampler, SpeedOptions
from acbench_methods.diffusion.text2img import SD15_REPO, build_text2img_components
from acbench_methods.dualanodiff.attention import DualAdapter
from acbench_methods.dualanodiff.presets import MODELS, Schedule, schedule_for
from acbench_methods.dualanodiff.sampling import SaliencyMask, sample_pairs, threshold_mask
from acbench_methods.dualanodiff.train import NO_FLIP_CATEGORIES, TrainData, to_tensor, train_adapter

log = logging.getLogger(__name__)

META = "dualanodiff.json"


class DualAnoDiffOptions(SpeedOptions):  # + compile, compile_mode, compile_backend (generation speed)
    model_config = ConfigDict(extra="forbid")

    model: Literal["sd15", "tiny"] = Field("sd15", description="sd15: SD-1.5; tiny: small random networks")
    schedule: Literal["paper", "tiny"] = "paper"
    variant: Literal["default", "bcm"] = Field(
        "default", description="default: both branches from noise (no normal image); bcm: background "
        "compensation, reference-only attention on a normal training image, painted onto it")
    weights_path: Path | None = Field(None, description="local diffusers folder of SD-1.5")
    # overrides of the schedule
    rank: int | None = Field(None, ge=1)
    train_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    steps: int | None = Field(None, ge=1, description="sampling steps")
    guidance: float | None = Field(None, ge=1)
    prompt_blend: str | None = None
    prompt_fg: str | None = None
    train_text_encoder: bool = Field(True, description="also train a LoRA on the text encoder (official)")
    # mask
    mask_threshold: float = Field(0.1, gt=0, lt=1, description="anomaly-branch brightness threshold (x 255)")
    saliency_model: Path | None = Field(None, description="TorchScript U2-Net (or other saliency net) file")
    saliency_threshold: float = Field(0.5, gt=0, lt=1)
    paint_on_normal: bool = Field(
        False, description="default variant: paste the generated image into a normal one under the mask "
        "(a documented deviation; bcm always does)")
    generation_batch: int = Field(4, ge=1, description="images per sampling loop")
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    train_state_dir: Path | None = Field(
        None, description="keep the resumable training state here (default: inside the fit folder)")


class DualAnoDiff(Synthesizer):
    Options = DualAnoDiffOptions
    fit_scope = "category"
    description = "DualAnoDiff (CVPR 2025): dual-branch LoRA SD-1.5 with cross-branch attention, per type"

    def __init__(self, options=None, weights: str = "pretrained") -> None:
        super().__init__(options, weights)
        self._components: InpaintComponents | None = None
        self._device: str | None = None
        self._adapter: DualAdapter | None = None
        self._adapter_file: Path | None = None
        self._saliency: SaliencyMask | None = None
        # compiled networks and padded batches (option `compile`); the loop encodes its two prompts per batch
        self._sampler = FastSampler(self.options, self.options.generation_batch, encode_once=False)
        self.losses: dict[str, list[float]] = {}
        self.empty_masks = 0

    # ------------------------------------------------------------------ settings
    @property
    def schedule(self) -> Schedule:
        o, s = self.options, schedule_for(self.options.schedule, self.options.variant)
        return Schedule(
            rank=o.rank or s.rank, train_steps=o.train_steps or s.train_steps,
            batch_size=o.batch_size or s.batch_size, learning_rate=o.learning_rate or s.learning_rate,
            checkpoint_every=s.checkpoint_every, inference_steps=o.steps or s.inference_steps,
            guidance=o.guidance or s.guidance, prompt_blend=o.prompt_blend or s.prompt_blend,
            prompt_fg=o.prompt_fg or s.prompt_fg)

    @property
    def resolution(self) -> int:
        return MODELS[self.options.model].resolution

    @property
    def policy(self) -> str:
        return "random" if self.options.model == "tiny" else self.weights_policy

    def required_weights(self) -> list[WeightRequirement]:
        needed = []
        if self.options.model != "tiny":
            path = str(self.options.weights_path) if self.options.weights_path else None
            needed.append(WeightRequirement("stable-diffusion-v1-5", f"DualAnoDiff base model ({SD15_REPO})",
                                            repo_id=SD15_REPO, path=path))
        if self.options.saliency_model is not None:
            needed.append(WeightRequirement("u2net", "saliency network for the masks (TorchScript)",
                                            path=str(self.options.saliency_model)))
        return needed

    def check(self) -> None:
        o = self.options
        if o.saliency_model is not None and not Path(o.saliency_model).expanduser().is_file():
            raise UserError(f"method dualanodiff: options.saliency_model: file {o.saliency_model} not found; "
                            "export U2-Net with torch.jit.script/trace or drop the option")
        if o.weights_path is not None and not Path(o.weights_path).expanduser().is_dir():
            raise UserError(f"method dualanodiff: options.weights_path: folder {o.weights_path} not found; "
                            f"download {SD15_REPO} or drop the option")

    def components(self, device: str, seed: int = 0) -> InpaintComponents:
        """The frozen networks, built once per instance; fp16 on CUDA for sampling, fp32 otherwise."""
        if self._components is None or self._device != device:
            dtype = torch.float16 if device.startswith("cuda") and self.options.mixed_precision != "no" else None
            self._components = build_text2img_components(
                MODELS[self.options.model].diffusion, self.policy, self.options.weights_path, seed, dtype
            ).to(device)
            self._device, self._adapter, self._adapter_file = device, None, None
        return self._components

    def _new_adapter(self, components: InpaintComponents, seed: int) -> DualAdapter:
        if self._adapter is not None:
            self._adapter.detach(components.unet)
        with torch.random.fork_rng(devices=[]):  # every type starts from the same, seeded init
            torch.manual_seed(seed)
            adapter = DualAdapter(components.unet, self.schedule.rank, self.options.variant == "bcm",
                                  components.text_encoder if self.options.train_text_encoder else None)
        adapter.to(components.unet.device, components.unet.dtype).requires_grad_(False)
        self._adapter, self._adapter_file = adapter.attach(components.unet), None
        return adapter

    # ------------------------------------------------------------------ fit
    def fit(self, categories: list[CategoryData], workdir: Path, seed: int, device: str = "cpu") -> None:
        workdir, s, size = Path(workdir), self.schedule, self.resolution
        components = self.components(device, seed)
        meta: dict[str, Any] = {"options": self.options.model_dump(mode="json"), "weights_policy": self.weights_policy,
                                "random_weights": components.random_weights, "source": components.source,
                                "rank": s.rank, "adapters": {}}
        for data in categories:
            normals = None
            if self.options.variant == "bcm":
                normals = [_resize(data.normal_image(i), size) for i in range(len(data.normal_train))]
                if not normals:
                    raise UserError(f"dualanodiff (bcm): {data.category} has no normal training images")
            for atype, examples in sorted(data.synthesis.items()):
                if not examples:
                    continue
                key = f"{data.category}/{atype}"
                file = f"adapter-{_safe(data.category)}-{_safe(atype)}.safetensors"
                if not (workdir / file).is_file():
                    train_data = TrainData.from_arrays(
                        [_resize(ex.image(), size) for ex in examples],
                        [_resize_mask(ex.mask(), size) for ex in examples], normals,
                        flip=data.category not in NO_FLIP_CATEGORIES)
                    adapter = self._new_adapter(components, seed)
                    report = train_adapter(
                        components, adapter, train_data, (s.prompt_blend, s.prompt_fg), steps=s.train_steps,
                        batch_size=s.batch_size, learning_rate=s.learning_rate, seed=seed,
                        state_dir=self._state_dir(workdir, key, seed), checkpoint_every=s.checkpoint_every,
                        device=device, mixed_precision=self.options.mixed_precision)
                    adapter.to(dtype=components.unet.dtype)
                    adapter.save(workdir / file)
                    self.losses[key] = report.losses
                meta["adapters"][key] = {"file": file, "images": len(examples),
                                         "loss_first": (self.losses.get(key) or [None])[0],
                                         "loss_last": (self.losses.get(key) or [None])[-1]}
        if not meta["adapters"]:
            raise UserError(f"dualanodiff: no real anomalies to train on in {[c.category for c in categories]} "
                            "(the synthesis split is empty)")
        (workdir / META).write_text(json.dumps(meta, indent=1))

    def _state_dir(self, workdir: Path, key: str, seed: int) -> Path:
        if self.options.train_state_dir is None:
            return workdir / "train-state" / _safe(key)
        config = {"options": self.options.model_dump(mode="json", exclude={"train_state_dir"}), "key": key,
                  "seed": seed, "weights": self.weights_policy}
        return Path(self.options.train_state_dir) / config_hash(config)

    # ------------------------------------------------------------------ generate
    def _load(self, data: CategoryData, request: GenerationRequest) -> tuple[InpaintComponents, DualAdapter]:
        fit_dir = request.fit_dir
        if fit_dir is None or not (Path(fit_dir) / META).is_file():
            raise UserError("dualanodiff: generation needs the fit folder (run the fit stage first)")
        meta = json.loads((Path(fit_dir) / META).read_text())
        for name in ("model", "variant", "train_text_encoder"):
            if meta["options"][name] != getattr(self.options, name):
                raise UserError(f"{fit_dir}: adapters were trained with {name} '{meta['options'][name]}', "
                                f"the protocol asks for '{getattr(self.options, name)}'; re-run the fit")
        if meta.get("rank") != self.schedule.rank:
            raise UserError(f"{fit_dir}: adapters have LoRA rank {meta.get('rank')}, the protocol asks for "
                            f"{self.schedule.rank}; re-run the fit")
        key = f"{data.category}/{request.anomaly_type}"
        if key not in meta["adapters"]:
            raise UserError(f"dualanodiff: the fit in {fit_dir} has no adapter for '{key}'")
        components = self.components(request.device, request.seed)
        if meta["random_weights"] != components.random_weights:
            raise UserError(f"{fit_dir}: fitted on {'random' if meta['random_weights'] else 'pretrained'} "
                            "weights but the other kind resolves now; re-run the fit")
        path = Path(fit_dir) / meta["adapters"][key]["file"]
        if self._adapter is None or self._adapter_file != path:
            adapter = self._new_adapter(components, 0)
            try:
                adapter.load(path)
            except (OSError, ValueError) as exc:
                why = str(exc).splitlines()[0]
                raise UserError(f"{path}: cannot load the adapter ({why}); re-run the fit") from None
            self._adapter_file = path
        return components, self._adapter

    def mask_of(self, fg: np.ndarray) -> np.ndarray:
        o = self.options
        if o.saliency_model is not None:
            if self._saliency is None:
                self._saliency = SaliencyMask(Path(o.saliency_model).expanduser(), o.saliency_threshold,
                                              self._device or "cpu")
            mask = self._saliency(fg)
        else:
            mask = threshold_mask(fg, o.mask_threshold)
        if not mask.any():  # never an empty pair: fall back to the brightest pixels of the anomaly branch
            self.empty_masks += 1
            level = fg.max(axis=2)
            mask = level >= np.percentile(level, 99)
        return mask

    def generate(self, data: CategoryData, request: GenerationRequest) -> Iterator[Sample]:
        components, adapter = self._load(data, request)
        size, rng = self.resolution, request.rng()
        on_normal = self.options.variant == "bcm" or self.options.paint_on_normal
        out_shape = data.normal_image(0).shape[:2]
        remaining = request.count
        while remaining > 0:
            batch = min(remaining, self.options.generation_batch)
            picks = [int(rng.integers(len(data.normal_train))) for _ in range(batch)]
            seeds = [int(rng.integers(2**31 - 1)) for _ in range(batch)]
            normals = [data.normal_image(i) for i in picks] if on_normal else None
            reference = None
            if self.options.variant == "bcm":
                reference = to_tensor([_resize(n, size) for n in normals])
            blends, fgs = self._sampler.run(components.unet, components.vae, batch,
                                            partial(self._paint, components, adapter, seeds, reference))
            for i, (blend, fg) in enumerate(zip(blends, fgs)):
                target = normals[i].shape[:2] if on_normal else out_shape
                image = _resize(blend, target)
                mask = _resize_mask(self.mask_of(fg), target)
                if not mask.any():
                    mask = _resize_mask(self.mask_of(fg), target, keep_any=True)
                source = ""
                if on_normal:
                    image = np.where(mask[..., None], image, normals[i])
                    source = data.normal_train[picks[i]].relative_to(data.root).as_posix()
                yield Sample(np.ascontiguousarray(image), mask, request.anomaly_type, source)
            remaining -= batch

    def _paint(self, components: InpaintComponents, adapter: DualAdapter, seeds: list[int],
               reference: torch.Tensor | None, pad_to: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """One sampling loop; compiled (`pad_to` set): padded to one batch shape with copies, dropped after."""
        n, s = len(seeds), self.schedule
        extra = 0 if pad_to is None else pad_to - n
        if extra > 0:
            seeds = seeds + [seeds[-1]] * extra
            if reference is not None:
                reference = torch.cat([reference, reference[-1:].expand(extra, *reference.shape[1:])])
        blends, fgs = sample_pairs(components, adapter, (s.prompt_blend, s.prompt_fg), seeds, self.resolution,
                                   s.inference_steps, s.guidance, reference)
        return blends[:n], fgs[:n]

    def provenance(self) -> dict[str, Any]:
        o = self.options
        random = (self._components.random_weights if self._components
                  else o.model == "tiny" or self.weights_policy == "random")
        mask = (f"saliency model {o.saliency_model} (min-max, > {o.saliency_threshold})" if o.saliency_model
                else f"threshold: anomaly-branch max channel > {o.mask_threshold} x 255 (U2-Net not used)")
        return {"model": o.model, "schedule": o.schedule, "variant": o.variant, "random_weights": random,
                "weights": "random" if random else "pretrained", "mask": mask, "u2net": o.saliency_model is not None,
                "painted_on_normal": o.variant == "bcm" or o.paint_on_normal, "empty_masks_filled": self.empty_masks,
                "generation_speed": self._sampler.facts()}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    h, w = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))


def _resize_mask(mask: np.ndarray, size: int | tuple[int, int], keep_any: bool = False) -> np.ndarray:
    h, w = (size, size) if isinstance(size, int) else size
    if mask.shape == (h, w):
        return mask.astype(bool)
    out = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) >= 128
    if keep_any and not out.any():  # a sub-pixel region: keep the pixel nearest its centre
        ys, xs = np.nonzero(mask)
        out = out.copy()
        out[int(ys.mean() * h / mask.shape[0]), int(xs.mean() * w / mask.shape[1])] = True
    return out
