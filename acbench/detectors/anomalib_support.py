"""Running anomalib models on acbench data: datasets of anomalib items, a quiet Engine, raw predictions.

Training goes through anomalib's `Engine` (Lightning); evaluation calls the fitted module on the
evaluation tensors directly and keeps raw scores (no normalisation, no thresholds), which
`acbench.detectors.metrics` then scores once over the whole set.
"""

from __future__ import annotations

import ctypes
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from acbench.detectors.common import TrainingPool, to_float


def quiet_anomalib() -> None:
    """Silence the import-time deprecation noise and Lightning's tips; cap glibc heap growth.

    The mallopt call (M_MMAP_THRESHOLD = 1 MiB) stops PatchCore's coreset loop from growing the
    heap to tens of GB on CPU (anomalib #2886).
    """
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*barebones.*")
    for message in (".*does not have many workers.*", ".*is an instance of `nn.Module`.*",
                    ".*no `val_dataloader`.*", ".*module\\(s\\) in eval mode.*", ".*returned `None`.*"):
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "anomalib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if os.name == "posix":
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)
        except (OSError, AttributeError):  # not glibc: nothing to tune
            pass


def raw_post_processor():
    """Raw scores: the default post-processor min-max normalises and clamps with val stats."""
    from anomalib.post_processing import PostProcessor

    return PostProcessor(enable_normalization=False, enable_thresholding=False)


class PoolDataset(Dataset):
    """Normal images (label 0, empty mask) then synthetic pairs (label 1), as anomalib ImageItems."""

    def __init__(self, pool: TrainingPool) -> None:
        images = [pool.normals] + [imgs for imgs, _ in pool.pairs.values()]
        empty = torch.zeros((len(pool.normals), *pool.normals.shape[-2:]), dtype=torch.bool)
        self.images = torch.cat(images)
        self.masks = torch.cat([empty] + [m for _, m in pool.pairs.values()])
        self.labels = torch.cat([torch.zeros(len(pool.normals), dtype=torch.long)]
                                + [torch.ones(len(m), dtype=torch.long) for _, m in pool.pairs.values()])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from anomalib.data import ImageItem

        return ImageItem(image=self.images[index].float() / 255.0, gt_label=self.labels[index],
                         gt_mask=self.masks[index], image_path=f"train/{index}")


def train_loader(pool: TrainingPool, batch_size: int, seed: int, samples_per_epoch: int | None = None,
                 normals_only: bool = False) -> DataLoader:
    """Batches with an expected synthetic share of `pool.ratio` (weighted sampling with replacement);
    normals only, shuffled, for one-class models."""
    from anomalib.data import ImageBatch

    dataset = PoolDataset(pool)
    generator = torch.Generator().manual_seed(seed)
    if normals_only:
        subset = torch.utils.data.Subset(dataset, range(len(pool.normals)))
        return DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=ImageBatch.collate)
    labels = dataset.labels
    n_syn, n_norm = int(labels.sum()), int((labels == 0).sum())
    ratio = pool.ratio if n_syn else 0.0
    weights = torch.where(labels == 1, ratio / max(n_syn, 1), (1 - ratio) / max(n_norm, 1)).double()
    sampler = WeightedRandomSampler(weights, samples_per_epoch or len(dataset), replacement=True,
                                    generator=generator)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=ImageBatch.collate)


def make_engine(device: torch.device, max_epochs: int, root: Path, **trainer_args):
    from anomalib.engine import Engine

    accelerator = "gpu" if device.type == "cuda" else "cpu"
    return Engine(accelerator=accelerator, devices=1, max_epochs=max_epochs, default_root_dir=str(root),
                  barebones=True, limit_val_batches=0, deterministic="warn", enable_progress_bar=False,
                  **trainer_args)


@torch.no_grad()
def predict_raw(module: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 16
                ) -> tuple[np.ndarray, np.ndarray]:
    """Raw anomaly maps (N, S, S) and image scores (N,) of an anomalib module on uint8 images."""
    module.eval().to(device)
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        out = module(to_float(images[start : start + batch_size], device))
        amap = out.anomaly_map.float()
        amap = amap[:, 0] if amap.ndim == 4 else amap
        if amap.shape[-2:] != images.shape[-2:]:
            amap = torch.nn.functional.interpolate(amap[:, None], size=images.shape[-2:], mode="bilinear")[:, 0]
        maps.append(amap.cpu())
        scores.append(out.pred_score.float().flatten().cpu())
    return torch.cat(maps).numpy(), torch.cat(scores).numpy()
