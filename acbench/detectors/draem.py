"""`draem-synthetic`: anomalib DRAEM with its Perlin/DTD anomaly source replaced by a method's synthetic set.

DRAEM has no hook for an external anomaly source: its `training_step` calls `self.augmenter(image)`
and ignores labels and masks. The narrowest change is to swap that one attribute for a module with
the same call signature that pastes the masked region of a random synthetic pair onto the clean
normal (DRAEM's own blend with beta = 1): the reconstruction target stays the clean image.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch

from acbench.data.category import CategoryData
from acbench.detectors.anomalib_support import (
    make_engine,
    predict_raw,
    quiet_anomalib,
    raw_post_processor,
    train_loader,
)
from acbench.detectors.base import Detector
from acbench.detectors.common import (
    SyntheticOptions,
    TrainingPool,
    category_records,
    load_eval_set,
    metric_rows,
    resolve_device,
    select_pairs,
    write_raw_outputs,
)
from acbench.detectors.metrics import detection_metrics
from acbench.errors import UserError
from acbench.results import MetricValue
from acbench.synthesis import SyntheticSet

# (image size, epochs, normal images per epoch). Paper: 700 epochs at 256 px (GPU only).
PRESETS = {"tiny": (64, 2, 24), "paper": (256, 700, None)}


class SyntheticPairAugmenter(torch.nn.Module):
    """Drop-in for DRAEM's PerlinAnomalyGenerator: (B,3,H,W) in [0,1] -> (augmented, mask (B,1,H,W)).

    With probability `probability` per image, a random synthetic pair's masked region replaces the
    same region of the clean normal; otherwise the image stays normal with an empty mask.
    """

    def __init__(self, pool: TrainingPool, probability: float) -> None:
        super().__init__()
        images = torch.cat([imgs for imgs, _ in pool.pairs.values()])
        masks = torch.cat([m for _, m in pool.pairs.values()])
        self.register_buffer("bank_images", images, persistent=False)
        self.register_buffer("bank_masks", masks, persistent=False)
        self.probability = probability

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = image.shape
        idx = torch.randint(len(self.bank_images), (batch,), device=image.device)  # global RNG: seeded
        pasted = self.bank_images[idx].to(image.device).float() / 255.0
        mask = self.bank_masks[idx].to(image.device).float()[:, None]
        if pasted.shape[-2:] != (height, width):
            pasted = torch.nn.functional.interpolate(pasted, size=(height, width), mode="bilinear", antialias=True)
            mask = torch.nn.functional.interpolate(mask, size=(height, width), mode="nearest")
        keep = (torch.rand(batch, device=image.device) < self.probability).float().view(batch, 1, 1, 1)
        mask = mask * keep
        return image * (1 - mask) + pasted * mask, mask


class DraemSynthetic(Detector):
    """anomalib DRAEM (reconstructive + discriminative) trained with the synthetic pairs as its anomalies."""

    Options = SyntheticOptions
    uses_synthetic: ClassVar[bool] = True
    description: ClassVar[str] = "anomalib DRAEM with the method's synthetic pairs as anomaly source"

    def run(self, data: CategoryData, synthetic: SyntheticSet | None, workdir: Path, seed: int,
            progress: Callable[[int, int], None] | None = None) -> list[MetricValue]:
        from anomalib.models import Draem
        from lightning.pytorch import seed_everything

        if self.preset not in PRESETS:
            raise UserError(f"detector preset '{self.preset}' is unknown; use one of {', '.join(PRESETS)}")
        if synthetic is None:
            raise UserError("draem-synthetic trains on synthetic pairs: give it a synthetic set")
        if self.options.select_on_test:
            raise UserError("options.select_on_test: only unet-localization reproduces the test-set selection; "
                            "remove it for draem-synthetic")
        quiet_anomalib()
        opts, device = self.options, resolve_device(self.device)
        size, epochs, samples = PRESETS[self.preset]
        size, epochs, samples = opts.image_size or size, opts.epochs or epochs, opts.samples_per_epoch or samples
        records = select_pairs(category_records(synthetic, data), opts.n_synthetic, seed)
        pool = TrainingPool.build(data, records, size, opts.synthetic_ratio)
        seed_everything(seed, workers=True, verbose=False)
        with tempfile.TemporaryDirectory(prefix="acbench-draem-") as root:
            dtd = Path(root) / "dtd-unused"  # an existing folder: Draem builds its stock generator, no download
            dtd.mkdir()
            model = Draem(dtd_dir=dtd, pre_processor=Draem.configure_pre_processor((size, size)),
                          post_processor=raw_post_processor(), evaluator=False, visualizer=False)
            model.augmenter = SyntheticPairAugmenter(pool, opts.synthetic_ratio)
            normals = TrainingPool(pool.normals, {}, 0.0)  # DRAEM trains on normals; the augmenter adds anomalies
            loader = train_loader(normals, 8, seed, samples_per_epoch=samples or len(pool.normals))
            make_engine(device, epochs, Path(root)).fit(model, train_dataloaders=loader)
        evalset = load_eval_set(data, size)
        maps, scores = predict_raw(model, evalset.images, device)
        write_raw_outputs(workdir, evalset, scores, maps, data.root)
        values = detection_metrics(evalset.labels, scores, evalset.masks.numpy(), maps)
        if progress:
            progress(1, 1)
        return metric_rows(values, {"weights": "from-scratch", "synthetic_ratio": opts.synthetic_ratio,
                                    "n_synthetic": pool.n_synthetic, "selection": "last", "preset": self.preset,
                                    "image_size": size})
