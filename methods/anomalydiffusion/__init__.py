"""AnomalyDiffusion (Hu et al., AAAI 2024, arXiv 2312.05767) re-implemented on diffusers.

What is learned, on the synthesis split of every category x type at once (`fit_scope: dataset`, one
checkpoint): a spatial anomaly embedding = anomaly tokens per category x type (appearance, textual
inversion) + tokens from a small trainable encoder of the anomaly mask (location), and, for the mask
model, mask tokens per category x type learned on the real masks. The base model is frozen.

Generation: a uniformly drawn normal training image is inpainted inside a target mask from the
protocol's `mask_source` (default: the method's own mask model, as in the paper) by DDIM with the
spatial anomaly embedding as the text condition, blending the latent back to the normal image outside
the mask at every step; Adaptive Attention Re-weighting (`attention.py`) strengthens the tokens where
the anomaly is still weak. The output is composited onto the normal pixels (`composite: pixel`), so
the image equals the normal one outside the mask; `composite: latent` keeps the original code's VAE
reconstruction as background.

Choices where the paper or code leave room (all configurable):
- AAR per type (`adaptive_attention`, `adaptive_attention_types`): the original README recommends it for
  texture-like anomalies and not for structural ones and does not say which types the released data used;
  default `auto` = on for texture categories, off for objects.
- AAR reference: the denoised estimate x0 of the previous step (`x0_pred`, the paper's wording) by default;
  `latent` compares the noisy latent as the released code does. Logit `scale` (paper/code) or `shift`.
- The mask encoder is a small convolutional pyramid instead of the pSp IR-50 encoder (see `embedding.py`).
- The mask model is trained jointly for all types (one run) rather than one 30k-step run per type.

Generation speed (`compile`, `compile_mode`, `compile_backend`; `methods/diffusion/speed.py`): compiled, the
UNet and VAE see every batch padded to `generation_batch` rows at the network calls, the noise still drawn
for the real rows (`sampling.py`); with AAR on, every UNet call carries a weight map (ones where AAR does
not act), so the compiled UNet is one graph per AAR setting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import ConfigDict, Field

from acbench.data.category import CategoryData
from acbench.errors import UserError
from acbench.masks import MaskSourceSpec
from acbench.masks.foreground import TEXTURE_CATEGORIES
from acbench.synthesis import GenerationRequest, Sample, Synthesizer, WeightRequirement
from acbench_methods.anomalydiffusion.embedding import AnomalyEmbedding, TokenTable, key_of, save_module, word_embedding
from acbench_methods.anomalydiffusion.model import (ANOMALY_FILE, MASK_FILE, META, FittedModel, load_fitted,
                                                    plugin_base, train_state_root)
from acbench_methods.anomalydiffusion.presets import MODELS, preset
from acbench_methods.anomalydiffusion.sampling import AARConfig, inpaint, rewinding
from acbench_methods.anomalydiffusion.train import TrainConfig, TrainItem, train
from acbench_methods.diffusion.speed import FastSampler, SpeedOptions

log = logging.getLogger(__name__)


class AnomalyDiffusionOptions(SpeedOptions):  # + compile, compile_mode, compile_backend (generation speed)
    model_config = ConfigDict(extra="forbid")
    model: Literal["ldm", "sd15", "tiny"] = "ldm"
    schedule: Literal["paper", "fast", "tiny"] = "paper"
    weights_path: Path | None = Field(None, description="local diffusers folder of the base model")
    mask_source: MaskSourceSpec = MaskSourceSpec(name="anomalydiffusion")
    train_mask_model: bool = True
    adaptive_attention: Literal["auto", "on", "off"] = "auto"
    adaptive_attention_types: dict[str, bool] = Field(
        default_factory=dict, description="per-type override, keyed 'type' or 'category/type'")
    aar_reference: Literal["x0_pred", "latent"] = "x0_pred"
    aar_mode: Literal["scale", "shift"] = "scale"
    aar_max_weight: float = Field(1.5, ge=1.0)
    aar_include_bos: bool = False
    composite: Literal["pixel", "latent"] = "pixel"
    train_steps: int | None = Field(None, ge=1)
    mask_train_steps: int | None = Field(None, ge=0)
    ddim_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    generation_batch: int = Field(4, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "fp16"
    train_state_dir: Path | None = Field(
        None, description="keep the resumable training state here (default: inside the fit folder, which a "
                          "study discards when its fit job fails; set this for long runs)")


def to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 HxWx3 -> [3, size, size] in [-1, 1] (bicubic, as the original loaders)."""
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 127.5 - 1


def mask_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img) >= 128).float()[None]


class AnomalyDiffusion(Synthesizer):
    Options = AnomalyDiffusionOptions
    fit_scope = "dataset"
    description = "AnomalyDiffusion (AAAI 2024): spatial anomaly embedding + AAR on a frozen LDM / SD-1.5"
    # `acbench selftest`: without weights the base is always the tiny random one (no random full-size LDM),
    # so the self-test runs it on every device
    selftest_options = {"cpu": {"model": "tiny", "schedule": "tiny"}}

    def __init__(self, options=None, weights: str = "pretrained") -> None:
        super().__init__(options, weights)
        self.preset = preset(self.options.schedule, train_steps=self.options.train_steps,
                             mask_train_steps=self.options.mask_train_steps, ddim_steps=self.options.ddim_steps,
                             batch_size=self.options.batch_size)
        self._fitted: FittedModel | None = None
        self._fit_base = None  # the base `fit` trained on, for provenance
        self._fitted_dir: Path | None = None
        self._mask_sources: dict = {}
        self.losses: dict[str, list[float]] = {}
        # compiled networks, batches padded to generation_batch at the network calls (option `compile`)
        self._sampler = FastSampler(self.options, self.options.generation_batch, encode_once=False)

    def required_weights(self) -> list[WeightRequirement]:
        spec = MODELS[self.options.model]
        return [WeightRequirement(spec.hub_id, "AnomalyDiffusion base model")] if spec.hub_id else []

    # ----------------------------------------------------------------------------------------- fit

    def fit(self, categories: list[CategoryData], workdir: Path, seed: int, device: str = "cpu", progress=None) -> None:
        workdir = Path(workdir)
        base = self._fit_base = plugin_base(self.options, self.weights_policy, device)
        size = base.resolution
        items = [TrainItem(to_tensor(ex.image(), size), mask_tensor(ex.mask(), size), key_of(data.category, atype))
                 for data in categories for atype, examples in sorted(data.synthesis.items()) for ex in examples]
        if not items:
            raise UserError("anomalydiffusion: no training anomalies in the synthesis split of the chosen categories")
        keys = sorted({it.key for it in items})
        p = self.preset
        state_root = train_state_root(self.options, self.weights_policy, workdir, keys, seed)
        if not (workdir / ANOMALY_FILE).is_file():
            with torch.random.fork_rng(devices=[]):  # the encoder's initialisation follows the seed
                torch.manual_seed(seed)
                module = AnomalyEmbedding(keys, p.anomaly_tokens, p.spatial_tokens, word_embedding(base, "anomaly"),
                                          p.encoder_widths)
            self.losses["anomaly"] = train(base, module, lambda m, k, masks: m(k, masks), items,
                                           self._train_config(p.train_steps, masked=True),
                                           state_root / "anomaly", seed, device, progress)
            save_module(module, workdir / ANOMALY_FILE, {"keys": keys, "n_anomaly": p.anomaly_tokens,
                                                          "n_spatial": p.spatial_tokens, "dim": base.hidden_size,
                                                          "widths": list(p.encoder_widths)})
        if self.options.train_mask_model and p.mask_train_steps > 0 and not (workdir / MASK_FILE).is_file():
            mask_items = [TrainItem(it.mask.expand(3, -1, -1) * 2 - 1, torch.ones_like(it.mask), it.key)
                          for it in items]
            table = TokenTable(keys, p.mask_tokens, word_embedding(base, "crack"))
            self.losses["mask"] = train(base, table, lambda m, k, _masks: m(k), mask_items,
                                        self._train_config(p.mask_train_steps, masked=False),
                                        state_root / "mask", seed + 1, device, progress)
            save_module(table, workdir / MASK_FILE, {"keys": keys, "n_tokens": p.mask_tokens, "dim": base.hidden_size})
        self._write_meta(workdir, keys, base)

    def _train_config(self, steps: int, masked: bool) -> TrainConfig:
        p = self.preset
        return TrainConfig(steps=steps, batch_size=p.batch_size, learning_rate=p.learning_rate,
                           save_every=p.save_every, masked_loss=masked, mixed_precision=self.options.mixed_precision)

    def _write_meta(self, workdir: Path, keys: list[str], base) -> None:
        meta = {"model": self.options.model, "schedule": self.options.schedule, "weights_policy": self.weights_policy,
                "weights_path": str(self.options.weights_path) if self.options.weights_path else None,
                "mixed_precision": self.options.mixed_precision, "keys": keys, "resolution": base.resolution,
                "random_weights": base.random_weights, "architecture": base.architecture,
                "losses": {k: {"first": v[0], "last": v[-1], "steps": len(v)} for k, v in self.losses.items() if v}}
        (workdir / META).write_text(json.dumps(meta, indent=1))

    # ------------------------------------------------------------------------------------ generate

    def _load(self, fit_dir: Path | None, device: str) -> FittedModel:
        if fit_dir is None:
            raise UserError("anomalydiffusion: generation needs the fit folder (run the fit stage first)")
        if self._fitted is None or self._fitted_dir != Path(fit_dir):
            self._fitted, self._fitted_dir = load_fitted(Path(fit_dir), device), Path(fit_dir)
        return self._fitted

    def mask_source(self, fitted: FittedModel, fit_dir: Path):
        spec = self.options.mask_source
        if spec.name in self._mask_sources:
            return self._mask_sources[spec.name]
        if spec.name == "anomalydiffusion" and not spec.options.get("checkpoint"):
            from acbench_methods.anomalydiffusion.masks import AnomalyDiffusionMasks

            options = AnomalyDiffusionMasks.Options.model_validate({**spec.options, "checkpoint": str(fit_dir)})
            source = AnomalyDiffusionMasks(options, model=fitted)
        else:
            source = spec.build()
        self._mask_sources[spec.name] = source
        return source

    def aar_enabled(self, category: str, anomaly_type: str) -> bool:
        o = self.options
        for name in (key_of(category, anomaly_type), anomaly_type):  # "bottle/broken_large" before "broken_large"
            if name in o.adaptive_attention_types:
                return o.adaptive_attention_types[name]
        if o.adaptive_attention == "auto":
            return category in TEXTURE_CATEGORIES
        return o.adaptive_attention == "on"

    def generate(self, data: CategoryData, request: GenerationRequest) -> Iterator[Sample]:
        fitted = self._load(request.fit_dir, request.device)
        key = key_of(data.category, request.anomaly_type)
        if fitted.anomaly is None or key not in fitted.keys:
            raise UserError(f"anomalydiffusion: the fit in {request.fit_dir} has no embedding for '{key}'")
        source = self.mask_source(fitted, request.fit_dir)
        rng = request.rng()
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        aar = AARConfig(self.aar_enabled(data.category, request.anomaly_type), self.options.aar_reference,
                        self.options.aar_mode, self.options.aar_max_weight, self.options.aar_include_bos)
        remaining = request.count
        while remaining > 0:
            batch = min(remaining, self.options.generation_batch)
            yield from self._generate_batch(data, request.anomaly_type, fitted, source, rng, generator, aar, batch)
            remaining -= batch

    def _generate_batch(self, data, anomaly_type, fitted, source, rng, generator, aar, batch) -> Iterator[Sample]:
        base, size = fitted.base, fitted.base.resolution
        picks = [int(rng.integers(len(data.normal_train))) for _ in range(batch)]
        normals = [data.normal_image(i) for i in picks]
        masks = [source.sample(data, anomaly_type, normal, rng) for normal in normals]
        mask_t = torch.stack([mask_tensor(m, size) for m in masks]).to(base.device)
        with torch.no_grad():
            vectors = fitted.anomaly([key_of(data.category, anomaly_type)] * batch, mask_t.float())
        normal_t, p = torch.stack([to_tensor(n, size) for n in normals]), self.preset

        def painted(pad_to: int | None) -> torch.Tensor:
            return inpaint(base, vectors, normal_t, mask_t, p.ddim_steps, p.eta, p.guidance, aar, generator,
                           pad_to=pad_to)

        images = self._sampler.run(base.unet, base.vae, batch, rewinding(generator, painted))
        pixels = ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for pick, normal, mask, generated in zip(picks, normals, masks, pixels, strict=True):
            if generated.shape[:2] != normal.shape[:2]:
                generated = np.asarray(Image.fromarray(generated).resize(normal.shape[1::-1], Image.BICUBIC))
            out = np.where(mask[..., None], generated, normal) if self.options.composite == "pixel" else generated
            source_normal = data.normal_train[pick].relative_to(data.root).as_posix()
            yield Sample(np.ascontiguousarray(out), mask, anomaly_type, source_normal)

    def provenance(self) -> dict:
        o = self.options
        base = self._fitted.base if self._fitted else self._fit_base
        random = base.random_weights if base else (o.model == "tiny" or self.weights_policy == "random")
        info = {"model": o.model, "schedule": o.schedule, "random_weights": random,
                "weights": "random" if random else "pretrained", "mask_source": o.mask_source.name,
                "composite": o.composite, "aar": {"mode": o.adaptive_attention, "types": o.adaptive_attention_types,
                                                  "reference": o.aar_reference, "logits": o.aar_mode},
                "generation_speed": self._sampler.facts()}
        if base is not None and base.resolution_info is not None:
            info["base_weights"] = base.resolution_info.as_dict()
        for name, source in self._mask_sources.items():
            info[f"mask_source_{name}"] = source.provenance()
        return info

