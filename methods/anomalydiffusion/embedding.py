"""The learned parts: anomaly tokens + spatial mask encoder (pairs), and mask tokens (the mask model).

Everything else is frozen. Tokens are kept per key "category/type" in one table, so one checkpoint
holds every category x type of a dataset (as the original joint checkpoint does). Checkpoints are
safetensors plus a JSON of the keys and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F


def key_of(category: str, anomaly_type: str) -> str:
    return f"{category}/{anomaly_type}"


class SpatialEncoder(nn.Module):
    """Binary mask -> `n_tokens` text-embedding vectors that encode where the anomaly is.

    The original uses a pSp GradualStyleEncoder (IR-50 + feature pyramid -> 4 style vectors). This is a
    smaller convolutional pyramid with the same idea: features pooled at every level (coarse to fine,
    on a 4x4 grid so position survives) and mapped by a linear layer to the tokens.
    """

    def __init__(self, n_tokens: int, dim: int, widths: tuple[int, ...] = (64, 128, 256, 512), grid: int = 4):
        super().__init__()
        self.n_tokens, self.dim, self.grid = n_tokens, dim, grid
        layers, c_in = [], 1
        for width in widths:
            layers.append(nn.Sequential(nn.Conv2d(c_in, width, 3, stride=2, padding=1),
                                        nn.GroupNorm(min(8, width), width), nn.SiLU(),
                                        nn.Conv2d(width, width, 3, padding=1), nn.SiLU()))
            c_in = width
        self.levels = nn.ModuleList(layers)
        self.head = nn.Linear(sum(widths) * grid * grid, n_tokens * dim)
        nn.init.normal_(self.head.weight, std=0.02 / (sum(widths) * grid * grid) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """masks [B, 1, H, W] in {0, 1} -> [B, n_tokens, dim]."""
        x, pooled = masks * 2 - 1, []
        for level in self.levels:
            x = level(x)
            pooled.append(F.adaptive_avg_pool2d(x, self.grid).flatten(1))
        return self.head(torch.cat(pooled, dim=1)).view(-1, self.n_tokens, self.dim)


class TokenTable(nn.Module):
    """`n_tokens` learned vectors per key, initialised from a word's embedding (textual inversion)."""

    def __init__(self, keys: list[str], n_tokens: int, init: torch.Tensor):
        super().__init__()
        self.keys = list(keys)
        self.vectors = nn.Parameter(init.detach().float().reshape(1, 1, -1).repeat(len(keys), n_tokens, 1).clone())

    def index(self, keys: list[str]) -> torch.Tensor:
        missing = [k for k in keys if k not in self.keys]
        if missing:
            raise KeyError(f"no learned tokens for {missing}; the checkpoint holds {self.keys}")
        return torch.tensor([self.keys.index(k) for k in keys], device=self.vectors.device)

    def forward(self, keys: list[str]) -> torch.Tensor:
        return self.vectors[self.index(keys)]


class AnomalyEmbedding(nn.Module):
    """The spatial anomaly embedding: anomaly tokens (appearance) followed by spatial tokens (location)."""

    def __init__(self, keys: list[str], n_anomaly: int, n_spatial: int, init: torch.Tensor,
                 widths: tuple[int, ...]):
        super().__init__()
        self.anomaly = TokenTable(keys, n_anomaly, init)
        self.spatial = SpatialEncoder(n_spatial, init.numel(), widths)

    @property
    def n_slots(self) -> int:
        return self.anomaly.vectors.shape[1] + self.spatial.n_tokens

    def forward(self, keys: list[str], masks: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.anomaly(keys), self.spatial(masks.to(self.anomaly.vectors.dtype))], dim=1)


def save_module(module: nn.Module, path: Path, meta: dict) -> None:
    """safetensors of the parameters, and `<name>.json` with what rebuilding the module needs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def load_meta(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def load_anomaly_embedding(path: Path) -> AnomalyEmbedding:
    meta = load_meta(path)
    module = AnomalyEmbedding(meta["keys"], meta["n_anomaly"], meta["n_spatial"], torch.zeros(meta["dim"]),
                              tuple(meta["widths"]))
    module.load_state_dict(load_file(str(path)))
    return module


def load_token_table(path: Path) -> TokenTable:
    meta = load_meta(path)
    module = TokenTable(meta["keys"], meta["n_tokens"], torch.zeros(meta["dim"]))
    module.load_state_dict(load_file(str(path)))
    return module


def word_embedding(base, word: str) -> torch.Tensor:
    """The mean input embedding of a word's tokens (the textual-inversion initialisation)."""
    ids = base.tokenizer(word, add_special_tokens=False).input_ids
    with torch.no_grad():
        table = base.text_encoder.get_input_embeddings().weight
        return table[torch.tensor(ids, device=table.device)].float().mean(dim=0).cpu()
