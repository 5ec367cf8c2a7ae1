"""Loading a fitted AnomalyDiffusion folder: its base model, anomaly embedding and mask tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from acbench.errors import UserError
from acbench_methods.anomalydiffusion.base import DiffusionBase, load_base
from acbench_methods.anomalydiffusion.embedding import (AnomalyEmbedding, TokenTable, load_anomaly_embedding,
                                                        load_token_table)

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
