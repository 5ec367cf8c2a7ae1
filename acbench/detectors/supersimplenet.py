"""`supersimplenet-supervised`: anomalib SuperSimpleNet (`supervised=True`) fed synthetic pairs as its
labelled anomalous training data (stock path: its `training_step` reads `gt_mask` and `gt_label`)."""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field

from acbench.data.category import CategoryData
from acbench.detectors.anomalib_support import (
    make_engine,
    predict_raw,
    quiet_anomalib,
    raw_post_processor,
    train_loader,
)
from acbench.detectors.backbones import WIDE_RESNET50, load_backbone, weights_column
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
from acbench.synthesis import SyntheticSet, WeightRequirement

# (image size, epochs, samples per epoch). SuperSimpleNet's feature-space Perlin noise needs >= 128 px
# (a 64-px input gives an 8x8 grid and random crashes in `generate_perlin_noise`). Paper: 300 epochs.
PRESETS = {"tiny": (128, 2, 64), "paper": (256, 300, None)}


class SuperSimpleNetOptions(SyntheticOptions):
    backbone_path: str | None = Field(None, description="local wide_resnet50_2-95faca4d.pth (else TORCH_HOME)")


class SuperSimpleNetSupervised(Detector):
    """SuperSimpleNet, supervised mode, Wide-ResNet-50-2 (layer2+layer3) features."""

    Options = SuperSimpleNetOptions
    uses_synthetic: ClassVar[bool] = True
    description: ClassVar[str] = "anomalib SuperSimpleNet, supervised by the synthetic pairs"

    def required_weights(self) -> list[WeightRequirement]:
        return [WIDE_RESNET50.requirement()]

    def run(self, data: CategoryData, synthetic: SyntheticSet | None, workdir: Path, seed: int,
            progress: Callable[[int, int], None] | None = None) -> list[MetricValue]:
        from anomalib.models import Supersimplenet
        from lightning.pytorch import seed_everything

        if self.preset not in PRESETS:
            raise UserError(f"detector preset '{self.preset}' is unknown; use one of {', '.join(PRESETS)}")
        if synthetic is None:
            raise UserError("supersimplenet-supervised trains on synthetic pairs: give it a synthetic set")
        if self.options.select_on_test:
            raise UserError("options.select_on_test: only unet-localization reproduces the test-set selection; "
                            "remove it for supersimplenet-supervised")
        quiet_anomalib()
        opts, device = self.options, resolve_device(self.device)
        size, epochs, samples = PRESETS[self.preset]
        size, epochs, samples = opts.image_size or size, opts.epochs or epochs, opts.samples_per_epoch or samples
        if size < 128:
            raise UserError("options.image_size: SuperSimpleNet needs at least 128 px")
        records = select_pairs(category_records(synthetic, data), opts.n_synthetic, seed)
        pool = TrainingPool.build(data, records, size, opts.synthetic_ratio)
        seed_everything(seed, workers=True, verbose=False)  # before building: random init is part of the run
        backbone, resolution = load_backbone(WIDE_RESNET50, self.weights_policy, opts.backbone_path)
        model = Supersimplenet(backbone=backbone, layers=["layer2", "layer3"], supervised=True,
                               pre_processor=Supersimplenet.configure_pre_processor((size, size)),
                               post_processor=raw_post_processor(), evaluator=False, visualizer=False)
        loader = train_loader(pool, 8, seed, samples_per_epoch=samples or 2 * len(pool.normals))
        with tempfile.TemporaryDirectory(prefix="acbench-ssn-") as root, _perlin_on(device):
            make_engine(device, epochs, Path(root)).fit(model, train_dataloaders=loader)
        evalset = load_eval_set(data, size)
        maps, scores = predict_raw(model, evalset.images, device)
        write_raw_outputs(workdir, evalset, scores, maps, data.root)
        values = detection_metrics(evalset.labels, scores, evalset.masks.numpy(), maps)
        if progress:
            progress(1, 1)
        return metric_rows(values, {"weights": weights_column(resolution), "synthetic_ratio": opts.synthetic_ratio,
                                    "n_synthetic": pool.n_synthetic, "selection": "last", "preset": self.preset,
                                    "image_size": size})


@contextlib.contextmanager
def _perlin_on(device: torch.device):
    """anomalib's SuperSimpleNet draws its feature-space Perlin noise without a device, so the noise lands
    on `cuda` (the current GPU) whatever device the model runs on: a CPU run on a GPU machine, or a job
    placed on `cuda:1`, then fails with mixed devices. Pin it to the detector's device while training."""
    from anomalib.models.image.supersimplenet import anomaly_generator

    original = anomaly_generator.generate_perlin_noise
    anomaly_generator.generate_perlin_noise = functools.partial(original, device=device)
    try:
        yield
    finally:
        anomaly_generator.generate_perlin_noise = original
