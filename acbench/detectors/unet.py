"""`unet-localization`: the literature's downstream protocol (AnomalyDiffusion, AnomalyControl).

DRAEM's discriminative sub-network (anomalib ships it) trained from scratch on normal images with
empty masks and synthetic pairs, focal loss, Adam, multi-step LR. Pixel score = softmax anomaly
channel; image score = max of the average-pooled map (21x21 at 256 px, DRAEM's convention).
anomalib has no "discriminative-only" model, hence the own training loop.

On a GPU the training set stays on the device (`DevicePool`: batches gathered there, the same batches as
the host path, option `data_on_device: false` restores that path), the U-Net and its inputs are
channels_last, and the forward pass runs under bf16 autocast (convolutions in bf16) while the weights,
BatchNorm running statistics, optimiser state, focal loss and the softmax of the maps stay fp32 (bf16 has
fp32's range: no loss scaling). That the bf16 forward leaves the detection metrics unchanged within
seed-to-seed spread is a GPU check (benchmarks/RESULTS.md), not yet measured. On the CPU everything is
fp32, and the device-resident and host paths give bit-identical models (tests/test_detectors_device_pool.py).
A preset may pin the CPU threads it computes with (`threads`; the demo's: 1), so the job's thread count
cannot change its numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from acbench.data.category import CategoryData
from acbench.detectors.anomalib_support import quiet_anomalib
from acbench.detectors.base import Detector
from acbench.detectors.common import (
    DevicePool,
    EvalSet,
    SyntheticOptions,
    TrainingPool,
    category_records,
    load_eval_set,
    metric_rows,
    pinned_threads,
    resolve_device,
    select_pairs,
    to_float,
    write_raw_outputs,
)
from acbench.detectors.metrics import detection_metrics
from acbench.errors import UserError
from acbench.results import MetricValue
from acbench.synthesis import SyntheticSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnetPreset:
    image_size: int
    base_width: int
    epochs: int
    samples_per_epoch: int
    batch_size: int
    lr: float
    milestones: tuple[float, ...] = (0.8, 0.9)  # fractions of the epochs (160 and 180 of 200)
    threads: int | None = None  # CPU threads to compute with (None: the job's, executor.cpus_per_job)


PRESETS = {
    # AnomalyDiffusion's train-localization: 200 epochs of 500 samples, batch 8, Adam 1e-4, x0.2 at 160/180.
    "paper": UnetPreset(image_size=256, base_width=64, epochs=200, samples_per_epoch=500, batch_size=8, lr=1e-4),
    # CPU demo and tests: a narrower U-Net at 64 px; a higher LR so a few hundred samples teach something.
    "tiny": UnetPreset(image_size=64, base_width=16, epochs=6, samples_per_epoch=80, batch_size=8, lr=3e-3),
    # The embedded demo: 17 method rows x 3 categories on 2 CPU cores in minutes, so half the width (a quarter of
    # the convolution work) and 24 steps; it shows the machinery, its numbers are seed noise (benchmarks/RESULTS.md).
    # Training this short is chaotic: a last-bit difference (another thread count's reduction order, another
    # CPU's vector width) moves a cell's AUROC as much as another seed does. One thread, wherever it runs, so
    # the executor's cpus_per_job cannot change a demo number.
    "demo": UnetPreset(image_size=64, base_width=8, epochs=3, samples_per_epoch=64, batch_size=8, lr=3e-3,
                       threads=1),
}


def pool_kernel(image_size: int) -> int:
    """DRAEM's 21x21 mean filter at 256 px, scaled to the input size (odd, at least 3)."""
    k = max(3, round(21 * image_size / 256))
    return k if k % 2 else k + 1


def build_unet(base_width: int) -> torch.nn.Module:
    from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork

    model = DiscriminativeSubNetwork(in_channels=3, out_channels=2, base_width=base_width)
    model.apply(_init_weights)
    return model


def _init_weights(module: torch.nn.Module) -> None:
    """DRAEM's initialisation: conv N(0, 0.02), batch-norm N(1, 0.02) with zero bias."""
    if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
        torch.nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, torch.nn.BatchNorm2d):
        torch.nn.init.normal_(module.weight, 1.0, 0.02)
        torch.nn.init.zeros_(module.bias)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32
            ) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps (N, S, S) and image scores (N,) for uint8 images."""
    model.eval()
    kernel = pool_kernel(images.shape[-1])
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size], device)
        with _autocast(device):
            logits = model(x)
        amap = torch.softmax(logits.float(), dim=1)[:, 1]
        pooled = F.avg_pool2d(amap[:, None], kernel, stride=1, padding=kernel // 2)
        maps.append(amap.cpu())
        scores.append(pooled.flatten(1).amax(dim=1).cpu())
    return torch.cat(maps).numpy(), torch.cat(scores).numpy()


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (the U-Net is conv-only: safe); full precision on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_unet(pool: TrainingPool, preset: UnetPreset, seed: int, device: torch.device,
               on_epoch: Callable[[int, torch.nn.Module], None] | None = None,
               data_on_device: bool = True) -> torch.nn.Module:
    """The literature's training loop; `on_epoch(epoch, model)` runs after every epoch.

    `data_on_device`: batches come from a `DevicePool` (same draws, gathered on the device) instead of
    being stacked on the host and copied each step."""
    from kornia.losses import FocalLoss

    torch.manual_seed(seed)
    model = build_unet(preset.base_width).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=preset.lr)
    milestones = sorted({max(1, round(f * preset.epochs)) for f in preset.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.2)
    focal = FocalLoss(alpha=None, gamma=2.0, reduction="mean")
    rng = np.random.default_rng(seed)
    source = DevicePool(pool, device) if data_on_device else pool
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    steps = max(1, preset.samples_per_epoch // preset.batch_size)
    for epoch in range(preset.epochs):
        model.train()
        for _ in range(steps):
            images, masks = source.batch(preset.batch_size, rng)
            x = to_float(images, device).contiguous(memory_format=memory_format)
            target = masks.to(device).long()
            with _autocast(device):
                logits = model(x)
            loss = focal(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        if on_epoch is not None:
            on_epoch(epoch, model)
    return model


class UnetLocalization(Detector):
    """DRAEM discriminative U-Net trained on synthetic pairs (AnomalyDiffusion protocol)."""

    Options = SyntheticOptions
    uses_synthetic: ClassVar[bool] = True
    presets: ClassVar[tuple[str, ...]] = tuple(PRESETS)
    description: ClassVar[str] = "DRAEM discriminative U-Net on synthetic pairs (literature protocol)"

    def preset_config(self) -> UnetPreset:
        if self.preset not in PRESETS:
            raise UserError(f"detector preset '{self.preset}' is unknown; use one of {', '.join(PRESETS)}")
        preset, opts = PRESETS[self.preset], self.options
        return replace(preset, epochs=opts.epochs or preset.epochs, image_size=opts.image_size or preset.image_size,
                       samples_per_epoch=opts.samples_per_epoch or preset.samples_per_epoch)

    def run(self, data: CategoryData, synthetic: SyntheticSet | None, workdir: Path, seed: int,
            progress: Callable[[int, int], None] | None = None) -> list[MetricValue]:
        preset, opts, device = self.preset_config(), self.options, resolve_device(self.device)
        quiet_anomalib()
        if synthetic is None:
            raise UserError("unet-localization trains on synthetic pairs: give it a synthetic set")
        records = select_pairs(category_records(synthetic, data), opts.n_synthetic, seed)
        pool = TrainingPool.build(data, records, preset.image_size, opts.synthetic_ratio)
        evalset = load_eval_set(data, preset.image_size)
        best = _BestOnTest(evalset, device) if opts.select_on_test else None

        def on_epoch(epoch: int, model: torch.nn.Module) -> None:
            if best is not None:
                best.update(epoch, model)
            if progress:
                progress(epoch + 1, preset.epochs)

        with pinned_threads(preset.threads if device.type == "cpu" else None):  # the metrics' sums too
            model = train_unet(pool, preset, seed, device, on_epoch, data_on_device=opts.data_on_device)
            if best is not None:
                maps, scores = best.maps, best.scores
            else:
                maps, scores = predict(model, evalset.images, device)
            values = detection_metrics(evalset.labels, scores, evalset.masks.numpy(), maps)
        write_raw_outputs(workdir, evalset, scores, maps, data.root)
        extra = {"weights": "from-scratch", "synthetic_ratio": opts.synthetic_ratio, "n_synthetic": pool.n_synthetic,
                 "selection": "test" if best else "last", "preset": self.preset, "image_size": preset.image_size}
        if best is not None:
            extra["best_epoch"] = best.epoch + 1
        if preset.threads is not None and device.type == "cpu":
            extra["compute_threads"] = preset.threads
        return metric_rows(values, extra)


class _BestOnTest:
    """The published selection: keep the epoch whose I-AUROC + P-AUROC + P-AP + AUPRO on the TEST set is
    highest. Optimistic by construction; reproduces published tables only."""

    def __init__(self, evalset: EvalSet, device: torch.device) -> None:
        self.evalset, self.device = evalset, device
        self.images = evalset.images.to(device)  # evaluated after every epoch: held on the device once
        self.score, self.epoch = -np.inf, -1
        self.maps: np.ndarray | None = None
        self.scores: np.ndarray | None = None

    def update(self, epoch: int, model: torch.nn.Module) -> None:
        maps, scores = predict(model, self.images, self.device)
        m = detection_metrics(self.evalset.labels, scores, self.evalset.masks.numpy(), maps)
        # undefined pixel metrics (all-empty masks) count 0: the selection then rests on image AUROC
        total = float(np.nansum([m["image_auroc"], m["pixel_auroc"], m["pixel_ap"], m["aupro"]]))
        if total > self.score:
            self.score, self.epoch, self.maps, self.scores = total, epoch, maps, scores
