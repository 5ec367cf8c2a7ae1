"""AnoGen's learned part: one textual-inversion vector per (category, type), and AnoGen's released files.

Training is textual inversion as AnoGen runs it (`train.sh`, `configs/latent-diffusion/txt2img-1p4B-finetune.yaml`):
one placeholder "*" with one vector initialised from the word "defect", the plain (unmasked) epsilon loss on
the whole anomaly image with the TI prompt templates, everything else frozen. It reuses AnomalyDiffusion's
`TokenTable` and resumable `train` loop; each key is its own run, as in AnoGen (one TI run per type).

Released vectors: AnoGen ships `DIFFUSION/logs/<category>_<type>/embeddings.pt`, the textual-inversion
`EmbeddingManager` format: {"string_to_token": {"*": tensor(id)}, "string_to_param": ParameterDict{"*": [1, D]}}.
They are read with `torch.load(weights_only=True)` (only `ParameterDict` is allowed beyond plain tensors
and containers, so a file cannot run code) and written back in the same layout by `export_released`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from acbench.errors import UserError
from acbench_methods.anomalydiffusion.base import PLACEHOLDER, DiffusionBase
from acbench_methods.anomalydiffusion.embedding import TokenTable, word_embedding
from acbench_methods.anomalydiffusion.train import TrainConfig, TrainItem, train

INIT_WORD = "defect"
RELEASED_FILE = "embeddings.pt"


def new_table(base: DiffusionBase, keys: list[str]) -> TokenTable:
    return TokenTable(keys, 1, word_embedding(base, INIT_WORD))


def train_token(base: DiffusionBase, key: str, items: list[TrainItem], cfg: TrainConfig, state_dir: Path, seed: int,
                device: str, progress=None) -> tuple[TokenTable, list[float]]:
    """Textual inversion of one key's vector on its images (resumes from `state_dir`)."""
    table = new_table(base, [key])
    losses = train(base, table, lambda m, k, _masks: m(k), [it for it in items if it.key == key], cfg, state_dir,
                   seed, device, progress)
    return table, losses


def one_key(table: TokenTable, key: str) -> TokenTable:
    """The one-key table of `key` (the fit folder keeps one file per key, so an interrupted fit resumes)."""
    single = TokenTable([key], 1, torch.zeros(table.vectors.shape[-1]))
    with torch.no_grad():
        single.vectors.copy_(table.vectors[table.index([key])].detach().cpu())
    return single


# --------------------------------------------------------------------------------------------- #
# AnoGen's released files


def released_dir_name(key: str) -> str:
    return key.replace("/", "_")


def find_released(folder: Path, key: str) -> Path | None:
    """`<folder>/.../<category>_<type>/embeddings.pt` (AnoGen's `logs/` layout; a run-name prefix is allowed)."""
    name = released_dir_name(key)
    hits = sorted(p for p in Path(folder).rglob(RELEASED_FILE) if p.parent.name == name
                  or p.parent.name.endswith("_" + name))
    return min(hits, key=lambda p: (len(p.parent.name), str(p))) if hits else None


def read_released(path: Path) -> torch.Tensor:
    """The placeholder's vector [D] from an EmbeddingManager file, loaded without executing code."""
    try:
        with torch.serialization.safe_globals([nn.ParameterDict]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code, a truncated download, another format
        raise UserError(f"{path}: not a textual-inversion embeddings.pt that loads safely ({exc.__class__.__name__}); "
                        "use AnoGen's DIFFUSION/logs/<category>_<type>/embeddings.pt files") from None
    params = data.get("string_to_param") if isinstance(data, dict) else None
    if isinstance(params, nn.ParameterDict):  # files from older torch lack ParameterDict's key list: read the slots
        params = dict(vars(params).get("_parameters", {}))
    if not isinstance(params, dict) or PLACEHOLDER not in params:
        raise UserError(f"{path}: no 'string_to_param' entry for '{PLACEHOLDER}'; expected AnoGen's "
                        "EmbeddingManager format")
    vector = torch.as_tensor(params[PLACEHOLDER]).detach().float()
    if vector.dim() == 2 and vector.shape[0] != 1:
        raise UserError(f"{path}: {vector.shape[0]} vectors per token; AnoGen uses one")
    return vector.reshape(-1)


def import_released(folder: Path, keys: list[str], dim: int) -> TokenTable:
    """A TokenTable with AnoGen's released vector for every key; one clear error for missing or wrong files."""
    found = {key: find_released(folder, key) for key in keys}
    missing = [released_dir_name(k) for k, p in found.items() if p is None]
    if missing:
        raise UserError(f"method anogen: options.embeddings_path {folder} has no {RELEASED_FILE} for "
                        f"{', '.join(missing)}; expected <folder>/<category>_<type>/{RELEASED_FILE}")
    vectors = []
    for path in found.values():
        vector = read_released(path)  # type: ignore[arg-type]
        if vector.numel() != dim:
            raise UserError(f"{path}: a {vector.numel()}-d vector, but the base model's text encoder is {dim}-d; "
                            "AnoGen's files need the LDM base (options.model: ldm)")
        vectors.append(vector)
    table = TokenTable(keys, 1, torch.zeros(dim))
    with torch.no_grad():
        table.vectors.copy_(torch.stack(vectors)[:, None, :])
    return table


def export_released(table: TokenTable, folder: Path, token_id: int) -> list[Path]:
    """Write every key as `<folder>/<category>_<type>/embeddings.pt` in AnoGen's format."""
    paths = []
    for i, key in enumerate(table.keys):
        path = Path(folder) / released_dir_name(key) / RELEASED_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        params = nn.ParameterDict({PLACEHOLDER: nn.Parameter(table.vectors[i].detach().cpu().clone())})
        torch.save({"string_to_token": {PLACEHOLDER: torch.tensor(token_id)}, "string_to_param": params}, path)
        paths.append(path)
    return paths
