"""Loading a fitted AnomalyDiffusion folder: its base model, anomaly embedding and mask tokens; the base and
the training-state folder of a plugin on this base (AnomalyDiffusion, AnoGen) from its options."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from pydantic import BaseModel

from acbench.errors import UserError
from acbench.protocol import config_hash
from acbench_methods.anomalydiffusion.base import DiffusionBase, load_base
from acbench_methods.anomalydiffusion.embedding import (AnomalyEmbedding, TokenTable, load_anomaly_embedding,
                                                        load_token_table)
from acbench_methods.diffusion.speed import SpeedOptions

META = "anomalydiffusion.json"
ANOMALY_FILE = "anomaly_embedding.safetensors"
MASK_FILE = "mask_tokens.safetensors"


def weight_dtype(device: str, mixed_precision: str) -> torch.dtype:
    if not device.startswith("cuda"):
        return torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


@cache
def cached_base(model: str, policy: str, path: str | None, device: str, dtype: torch.dtype) -> DiffusionBase:
    """One frozen base per (model, weights, device) per process: the method and its mask source share it."""
    return load_base(model, policy, path).to(device, dtype)


def plugin_base(options: BaseModel, policy: str, device: str) -> DiffusionBase:
    """The cached base of a plugin's options `model`, `weights_path` and `mixed_precision`."""
    path = str(options.weights_path) if options.weights_path else None
    return cached_base(options.model, policy, path, device, weight_dtype(device, options.mixed_precision))


def train_state_root(options: BaseModel, policy: str, workdir: Path, keys: list[str], seed: int) -> Path:
    """Where a plugin keeps its resumable training state: inside the fit folder, or under its option
    `train_state_dir` one subfolder per training configuration (options, keys, seed, weights policy; not
    the generation speed options, which training does not read)."""
    if options.train_state_dir is None:
        return workdir / "train-state"
    ignored = {"train_state_dir", *SpeedOptions.model_fields}
    config = {"options": options.model_dump(mode="json", exclude=ignored), "keys": keys, "seed": seed,
              "weights": policy}
    return Path(options.train_state_dir) / config_hash(config)


@dataclass
class FittedModel:
    meta: dict
    base: DiffusionBase
    anomaly: AnomalyEmbedding | None
    masks: TokenTable | None

    @property
    def keys(self) -> list[str]:
        return list(self.meta["keys"])


def read_meta(fit_dir: Path) -> dict:
    path = Path(fit_dir) / META
    if not path.is_file():
        raise UserError(f"{fit_dir}: not an AnomalyDiffusion fit ({META} missing); run the method's fit first")
    return json.loads(path.read_text())


def load_fitted(fit_dir: Path, device: str = "cpu") -> FittedModel:
    fit_dir = Path(fit_dir)
    meta = read_meta(fit_dir)
    dtype = weight_dtype(device, meta.get("mixed_precision", "no"))
    base = cached_base(meta["model"], meta["weights_policy"], meta.get("weights_path"), device, dtype)
    if meta.get("architecture") and meta["architecture"] != base.architecture:
        raise UserError(f"{fit_dir}: fitted on the {meta['architecture']} base but the {base.architecture} base "
                        "resolves now (weights appeared or vanished since the fit); re-run the fit")
    anomaly = load_anomaly_embedding(fit_dir / ANOMALY_FILE).to(device) if (fit_dir / ANOMALY_FILE).is_file() else None
    masks = load_token_table(fit_dir / MASK_FILE).to(device) if (fit_dir / MASK_FILE).is_file() else None
    return FittedModel(meta, base, anomaly, masks)
