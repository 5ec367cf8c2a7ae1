"""A content-addressed cache of CSM features (frozen networks: compute once, reuse across runs).

The key hashes everything the feature depends on: the extractor's weights fingerprint, the image
and mask pixels, the caption and the ASEA settings. Files are safetensors, written atomically.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from acbench.data.io import atomic_write


def default_cache_dir() -> Path:
    root = os.environ.get("ACBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "acbench"
    )
    return Path(root).expanduser() / "anomalycontrol" / "csm"


@dataclass(frozen=True)
class Reference:
    """A reference anomaly for CSM: its image, its mask and its caption (at the diffusion resolution),
    and optionally the same image and mask at their file resolution (CSM on the raw image)."""

    image: np.ndarray
    mask: np.ndarray
    caption: str
    raw_image: np.ndarray | None = None
    raw_mask: np.ndarray | None = None

    def for_csm(self, raw: bool) -> Reference:
        """The view CSM sees: the file-resolution image and mask when asked for and available."""
        if raw and self.raw_image is not None:
            return Reference(self.raw_image, self.raw_mask, self.caption)
        return Reference(self.image, self.mask, self.caption)


class FeatureCache:
    """Feature per (extractor, reference, settings); counts hits and misses."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(fingerprint: str, ref: Reference, settings: str) -> str:
        digest = hashlib.sha256()
        for part in (
            fingerprint.encode(),
            np.ascontiguousarray(ref.image).tobytes(),
            np.packbits(np.asarray(ref.mask, dtype=bool)).tobytes(),
            ref.caption.encode(),
            settings.encode(),
        ):
            digest.update(hashlib.sha256(part).digest())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get_or_compute(
        self,
        fingerprint: str,
        refs: Sequence[Reference],
        settings: str,
        compute: Callable[[list[Reference]], torch.Tensor],
        batch_size: int = 16,
    ) -> torch.Tensor:
        """Features (N x dim, CPU float32) of `refs`, computing only the missing ones, in batches."""
        keys = [self.key(fingerprint, r, settings) for r in refs]
        found: dict[str, torch.Tensor] = {}
        for key in dict.fromkeys(keys):
            if self.root is not None and self._path(key).is_file():
                found[key] = load_file(str(self._path(key)))["feature"]
        self.hits += sum(k in found for k in keys)
        todo = [i for i, k in enumerate(keys) if k not in found and keys.index(k) == i]
        self.misses += len(todo)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            features = compute([refs[i] for i in chunk]).detach().float().cpu()
            for i, feature in zip(chunk, features):
                found[keys[i]] = feature.contiguous()
                if self.root is not None:
                    atomic_write(
                        self._path(keys[i]),
                        lambda tmp, f=feature: save_file({"feature": f.contiguous()}, str(tmp)),
                    )
        return torch.stack([found[k] for k in keys])
