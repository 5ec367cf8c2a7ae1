"""AnoGen (Gui, Gao, Liu, Wang, Wu; ECCV 2024): few-shot anomaly generation by textual inversion and box guidance.

Re-implemented from the paper and the description of its public code (gaobb/AnoGen, which ships no licence;
no code was copied) on the LDM base that AnomalyDiffusion loads (`CompVis/ldm-text2im-large-256`).

- `fit`: textual inversion of one token per (category, type) on the synthesis split (`embeddings.py`), or,
  with `embeddings_path`, AnoGen's released per-type `embeddings.pt` files imported instead of training.
- `generate`: for a uniformly drawn normal training image, a rotated box from the type's size range on the
  product (`boxes.py`), then blended sampling: DDIM 50 steps, eta 0, classifier-free guidance 10, prompt "*",
  starting from pure noise; before every step the latent outside the box is replaced by the normal image's
  latent noised to that step (`q_sample(x0, t)`), so only the box is generated.

Masks are boxes, not defect outlines: every pair is tagged `mask_kind: box` in the SyntheticSet index and
the report marks pixel metrics of such rows as not comparable. `mask: tight` derives a pixel mask instead:
the box pixels whose mean absolute RGB change exceeds `tight_threshold` (a documented approximation; an empty
result keeps the box and its `box` tag).

Deviations (configurable): AnoGen samples 3 random anomalies per type (seed 0) for TI; acbench trains on the
protocol's synthesis split like every method. `composite: pixel` (default) pastes the generated box onto the
normal pixels; `composite: none` keeps AnoGen's output, the whole decoded image.

Generation speed (`compile`, `compile_mode`, `compile_backend`; `methods/diffusion/speed.py`): compiled, the
UNet and VAE see every batch padded to `generation_batch` rows at the network calls, the noise still drawn
for the real rows (AnomalyDiffusion's `sampling.inpaint`).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import ConfigDict, Field, field_validator
from safetensors.torch import load_file

from acbench.data.category import CategoryData
from acbench.errors import UserError, require_folder
from acbench.synthesis import GenerationRequest, Sample, Synthesizer, WeightRequirement
from acbench_methods.anogen.boxes import WORK_SIDE, Range, box_range, product_foreground, sample_box
from acbench_methods.anogen.embeddings import import_released, one_key, released_dir_name, train_token
from acbench_methods.anomalydiffusion import mask_tensor, to_tensor
from acbench_methods.anomalydiffusion.base import DiffusionBase
from acbench_methods.anomalydiffusion.embedding import key_of, save_module
from acbench_methods.anomalydiffusion.model import cached_base, plugin_base, train_state_root, weight_dtype
from acbench_methods.anomalydiffusion.presets import MODELS
from acbench_methods.anomalydiffusion.sampling import AARConfig, inpaint, rewinding
from acbench_methods.anomalydiffusion.train import TrainConfig, TrainItem
from acbench_methods.diffusion.speed import FastSampler, SpeedOptions

log = logging.getLogger(__name__)

META = "anogen.json"
TOKENS = "tokens"
PROMPT = "*"  # AnoGen's generation prompt: the learned token alone


@dataclass(frozen=True)
class Preset:
    train_steps: int
    batch_size: int
    learning_rate: float
    save_every: int
    ddim_steps: int
    eta: float
    guidance: float


PRESETS: dict[str, Preset] = {
    # AnoGen train.sh / txt2img-1p4B-finetune.yaml: base_lr 5e-3 x batch 4 (textual inversion's scale_lr),
    # max_steps 6100, 256 px; generate.sh: DDIM 50, eta 0, scale 10.
    "paper": Preset(train_steps=6100, batch_size=4, learning_rate=0.02, save_every=500, ddim_steps=50, eta=0.0,
                    guidance=10.0),
    "tiny": Preset(train_steps=3, batch_size=2, learning_rate=0.05, save_every=2, ddim_steps=3, eta=0.0,
                   guidance=10.0),
}


class AnoGenOptions(SpeedOptions):  # + compile, compile_mode, compile_backend (generation speed)
    model_config = ConfigDict(extra="forbid")
    model: Literal["ldm", "tiny"] = "ldm"
    schedule: Literal["paper", "tiny"] = "paper"
    weights_path: Path | None = Field(None, description="local diffusers folder of the LDM base")
    embeddings_path: Path | None = Field(
        None, description="folder of AnoGen's released <category>_<type>/embeddings.pt: imported, no training")
    train_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    ddim_steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=1.0)
    rotation: Literal["always", "table", "never"] = "always"
    ranges: dict[str, tuple[tuple[float, float], tuple[float, float], bool]] = Field(
        default_factory=dict, description="per 'category/type': ((w_lo, w_hi), (h_lo, h_hi), rotate), fractions")
    foreground: Literal["otsu", "whole"] = "otsu"
    mask: Literal["box", "tight"] = "box"
    tight_threshold: float = Field(0.1, gt=0.0, lt=1.0)
    composite: Literal["pixel", "none"] = "pixel"
    generation_batch: int = Field(4, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "fp16"
    train_state_dir: Path | None = Field(
        None, description="keep the resumable training state here (default: inside the fit folder)")

    @field_validator("ranges")
    @classmethod
    def _fractions(cls, ranges: dict) -> dict:
        for key, (width, height, _rotate) in ranges.items():
            if "/" not in key:
                raise ValueError(f"ranges key '{key}' must be 'category/type'")
            for lo, hi in (width, height):
                if not 0 < lo <= hi <= 1:
                    raise ValueError(f"ranges['{key}']: need 0 < low <= high <= 1 (fractions of 256 px), "
                                     f"got [{lo}, {hi}]")
        return ranges


@dataclass
class Fitted:
    meta: dict
    base: DiffusionBase
    vectors: dict[str, torch.Tensor]  # key -> [1, D]


def items_of(categories: list[CategoryData], size: int) -> list[TrainItem]:
    return [TrainItem(to_tensor(ex.image(), size), mask_tensor(ex.mask(), size), key_of(data.category, atype))
            for data in categories for atype, examples in sorted(data.synthesis.items()) for ex in examples]


def latent_box(mask: np.ndarray, latent: int) -> torch.Tensor:
    """The box at latent resolution as AnoGen makes it (a PIL nearest resize): [1, L, L] in {0, 1}."""
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((latent, latent), Image.NEAREST)
    return torch.from_numpy(np.asarray(small) > 127).float()[None]


def paint(base: DiffusionBase, vectors: torch.Tensor, normals: list[np.ndarray], masks: list[np.ndarray],
          preset: Preset, generator: torch.Generator, final_blend: bool = True, on_step=None,
          pad_to: int | None = None) -> np.ndarray:
    """Blended sampling in the boxes `masks` (bool, any size) of `normals`: uint8 [B, R, R, 3] at base resolution.
    `pad_to`: the UNet and VAE inputs padded to that many rows (compiled networks; see `inpaint`)."""
    size = base.resolution
    pixel = torch.stack([mask_tensor(m, size) for m in masks]).to(base.device)
    latent = torch.stack([latent_box(m, base.latent_size) for m in masks]).to(base.device)
    images = inpaint(base, vectors, torch.stack([to_tensor(n, size) for n in normals]), pixel, preset.ddim_steps,
                     preset.eta, preset.guidance, AARConfig(enabled=False), generator, template=PROMPT,
                     latent_masks=latent, final_blend=final_blend, on_step=on_step, pad_to=pad_to)
    return ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class AnoGen(Synthesizer):
    Options = AnoGenOptions
    fit_scope = "category"
    description = "AnoGen (ECCV 2024): textual inversion per type + box-guided blended LDM sampling (box masks)"

    def __init__(self, options=None, weights: str = "pretrained") -> None:
        super().__init__(options, weights)
        o = self.options
        overrides = {k: v for k, v in (("train_steps", o.train_steps), ("batch_size", o.batch_size),
                                       ("ddim_steps", o.ddim_steps), ("guidance", o.guidance)) if v is not None}
        self.preset = replace(PRESETS[o.schedule], **overrides)
        self._fitted: Fitted | None = None
        self._fitted_dir: Path | None = None
        self._fit_base: DiffusionBase | None = None
        self.losses: dict[str, list[float]] = {}
        self.box_stats = {"pairs": 0, "default_range_types": set(), "whole_image_fallbacks": 0, "tight_empty": 0}
        # compiled networks, batches padded to generation_batch at the network calls (option `compile`)
        self._sampler = FastSampler(o, o.generation_batch, encode_once=False)

    def required_weights(self) -> list[WeightRequirement]:
        spec, o = MODELS[self.options.model], self.options
        out = []
        if spec.hub_id:
            out.append(WeightRequirement(spec.hub_id, "AnoGen base model (LDM text-to-image, 1.45B)",
                                         repo_id=spec.hub_id, path=str(o.weights_path) if o.weights_path else None))
        if o.embeddings_path:
            out.append(WeightRequirement("anogen-embeddings", "AnoGen's released per-type embeddings.pt files",
                                         path=str(o.embeddings_path)))
        return out

    def check(self) -> None:
        if self.options.embeddings_path is not None:
            require_folder(self.options.embeddings_path, "method anogen: options.embeddings_path",
                           "point it at AnoGen's DIFFUSION/logs folder (<category>_<type>/embeddings.pt)",
                           suffixes=[".pt"])

    # ----------------------------------------------------------------------------------------- fit

    def fit(self, categories: list[CategoryData], workdir: Path, seed: int, device: str = "cpu", progress=None) -> None:
        workdir = Path(workdir)
        base = self._fit_base = plugin_base(self.options, self.weights_policy, device)
        keys = sorted({key_of(d.category, t) for d in categories for t in d.synthesis})
        if not keys:
            raise UserError("anogen: no anomaly types in the synthesis split of the chosen categories")
        out = workdir / TOKENS
        if self.options.embeddings_path is not None:
            self.check()
            table = import_released(Path(self.options.embeddings_path), keys, base.hidden_size)
            for key in keys:
                save_module(one_key(table, key), out / f"{released_dir_name(key)}.safetensors",
                            {"key": key, "source": "released"})
        else:
            items = items_of(categories, base.resolution)
            p = self.preset
            cfg = TrainConfig(steps=p.train_steps, batch_size=p.batch_size, learning_rate=p.learning_rate,
                              save_every=p.save_every, masked_loss=False, augment=False,
                              mixed_precision=self.options.mixed_precision)
            state_root = train_state_root(self.options, self.weights_policy, workdir, keys, seed)
            for key in keys:
                path = out / f"{released_dir_name(key)}.safetensors"
                if path.is_file():  # finished before an interruption
                    continue
                table, losses = train_token(base, key, items, cfg, state_root / released_dir_name(key),
                                            seed + zlib.crc32(key.encode()) % 100_003, device, progress)
                self.losses[key] = losses
                save_module(table, path, {"key": key, "source": "trained"})
        meta = {"model": self.options.model, "schedule": self.options.schedule, "weights_policy": self.weights_policy,
                "weights_path": str(self.options.weights_path) if self.options.weights_path else None,
                "mixed_precision": self.options.mixed_precision, "keys": keys,
                "embeddings": "released" if self.options.embeddings_path else "trained",
                "random_weights": base.random_weights, "architecture": base.architecture,
                "losses": {k: {"first": v[0], "last": v[-1], "steps": len(v)} for k, v in self.losses.items() if v}}
        (workdir / META).write_text(json.dumps(meta, indent=1))

    def _load(self, fit_dir: Path | None, device: str) -> Fitted:
        if fit_dir is None or not (Path(fit_dir) / META).is_file():
            raise UserError(f"anogen: {fit_dir} is not an AnoGen fit ({META} missing); run the fit stage first")
        if self._fitted is None or self._fitted_dir != Path(fit_dir):
            meta = json.loads((Path(fit_dir) / META).read_text())
            base = cached_base(meta["model"], meta["weights_policy"], meta.get("weights_path"), device,
                               weight_dtype(device, meta.get("mixed_precision", "no")))
            if meta.get("architecture") and meta["architecture"] != base.architecture:
                raise UserError(f"{fit_dir}: fitted on the {meta['architecture']} base but the {base.architecture} "
                                "base resolves now; re-run the fit")
            vectors = {key: load_file(str(Path(fit_dir) / TOKENS / f"{released_dir_name(key)}.safetensors"))[
                "vectors"][0].to(base.device, base.dtype) for key in meta["keys"]}
            self._fitted, self._fitted_dir = Fitted(meta, base, vectors), Path(fit_dir)
        return self._fitted

    # ------------------------------------------------------------------------------------ generate

    def box_for(self, normal: np.ndarray, category: str, anomaly_type: str, rng: np.random.Generator) -> np.ndarray:
        """A box mask (bool, the normal image's size) for this type on this image."""
        o = self.options
        limits, known = box_range(category, anomaly_type, o.ranges)
        if not known:
            self.box_stats["default_range_types"].add(key_of(category, anomaly_type))
        rotate = {"always": True, "table": limits[2], "never": False}[o.rotation]
        whole = np.ones((WORK_SIDE, WORK_SIDE), bool)
        foreground = product_foreground(normal) if o.foreground == "otsu" else whole
        box = sample_box(foreground, limits, rotate, rng)
        if box is None:  # AnoGen's loop would never end: give up on the foreground rule for this image
            log.warning("anogen: no box of %s/%s lies on the product; using the whole frame", category, anomaly_type)
            self.box_stats["whole_image_fallbacks"] += 1
            box = sample_box(whole, limits, rotate, rng, min_on_product=-1.0)  # the first box drawn
        mask = Image.fromarray(box.mask).resize(normal.shape[1::-1], Image.NEAREST)
        return np.asarray(mask).astype(bool)

    def generate(self, data: CategoryData, request: GenerationRequest) -> Iterator[Sample]:
        fitted = self._load(request.fit_dir, request.device)
        key = key_of(data.category, request.anomaly_type)
        if key not in fitted.vectors:
            raise UserError(f"anogen: the fit in {request.fit_dir} has no embedding for '{key}'")
        rng = request.rng()
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        remaining = request.count
        while remaining > 0:
            batch = min(remaining, self.options.generation_batch)
            yield from self._batch(data, request.anomaly_type, fitted, fitted.vectors[key], rng, generator, batch)
            remaining -= batch

    def _batch(self, data, anomaly_type, fitted, vector, rng, generator, batch) -> Iterator[Sample]:
        o = self.options
        picks = [int(rng.integers(len(data.normal_train))) for _ in range(batch)]
        normals = [data.normal_image(i) for i in picks]
        boxes = [self.box_for(n, data.category, anomaly_type, rng) for n in normals]
        base = fitted.base

        def painted(pad_to: int | None) -> np.ndarray:
            return paint(base, vector.expand(batch, -1, -1), normals, boxes, self.preset, generator,
                         final_blend=o.composite == "pixel", pad_to=pad_to)

        pixels = self._sampler.run(base.unet, base.vae, batch, rewinding(generator, painted))
        for pick, normal, box, generated in zip(picks, normals, boxes, pixels, strict=True):
            if generated.shape[:2] != normal.shape[:2]:
                generated = np.asarray(Image.fromarray(generated).resize(normal.shape[1::-1], Image.BICUBIC))
            out = np.where(box[..., None], generated, normal) if o.composite == "pixel" else generated
            mask, kind = box, "box"
            if o.mask == "tight":
                change = np.abs(out.astype(np.float32) - normal.astype(np.float32)).mean(axis=2) / 255
                tight = box & (change > o.tight_threshold)
                if tight.any():
                    mask, kind = tight, "pixel"
                else:
                    self.box_stats["tight_empty"] += 1
            self.box_stats["pairs"] += 1
            source_normal = data.normal_train[pick].relative_to(data.root).as_posix()
            yield Sample(np.ascontiguousarray(out), mask, anomaly_type, source_normal, mask_kind=kind)

    def provenance(self) -> dict:
        o = self.options
        base = self._fitted.base if self._fitted else self._fit_base
        random = base.random_weights if base else (o.model == "tiny" or self.weights_policy == "random")
        stats = {**self.box_stats, "default_range_types": sorted(self.box_stats["default_range_types"])}
        info = {"model": o.model, "schedule": o.schedule, "random_weights": random,
                "weights": "random" if random else "pretrained",
                "embeddings": "released" if o.embeddings_path else "trained", "mask": o.mask,
                "mask_kind": "box" if o.mask == "box" else "pixel (tight, derived from the box)",
                "rotation": o.rotation, "foreground": o.foreground, "composite": o.composite, "boxes": stats,
                "generation_speed": self._sampler.facts()}
        if base is not None and base.resolution_info is not None:
            info["base_weights"] = base.resolution_info.as_dict()
        return info


__all__ = ["AnoGen", "AnoGenOptions", "PRESETS", "Range", "paint"]
