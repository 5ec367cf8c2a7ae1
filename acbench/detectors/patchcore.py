"""`patchcore`: unsupervised anomalib PatchCore on normal images only — the "no synthesis" reference row."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

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
    TrainingPool,
    image_tensor,
    load_eval_set,
    metric_rows,
    resolve_device,
    write_raw_outputs,
)
from acbench.detectors.metrics import detection_metrics
from acbench.errors import UserError
from acbench.results import MetricValue
from acbench.synthesis import SyntheticSet, WeightRequirement

IMAGE_SIZES = {"tiny": 64, "paper": 256}


class PatchCoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_size: int | None = Field(None, ge=32, description="override the preset's input size")
    coreset_sampling_ratio: float = Field(0.1, gt=0.0, le=1.0)
    num_neighbors: int = Field(9, ge=1)
    backbone_path: str | None = Field(None, description="local wide_resnet50_2-95faca4d.pth (else TORCH_HOME)")


class PatchCore(Detector):
    """anomalib PatchCore (Wide-ResNet-50-2 layer2+layer3) fitted on the normal training images."""

    Options = PatchCoreOptions
    uses_synthetic: ClassVar[bool] = False
    description: ClassVar[str] = "unsupervised PatchCore on normal images only (no-synthesis reference)"

    def required_weights(self) -> list[WeightRequirement]:
        return [WIDE_RESNET50.requirement()]

    def run(self, data: CategoryData, synthetic: SyntheticSet | None, workdir: Path, seed: int,
            progress: Callable[[int, int], None] | None = None) -> list[MetricValue]:
        from anomalib.models import Patchcore
        from lightning.pytorch import seed_everything

        if self.preset not in IMAGE_SIZES:
            raise UserError(f"detector preset '{self.preset}' is unknown; use one of {', '.join(IMAGE_SIZES)}")
        quiet_anomalib()
        size, opts, device = self.options.image_size or IMAGE_SIZES[self.preset], self.options, \
            resolve_device(self.device)
        seed_everything(seed, workers=True, verbose=False)  # before building: the coreset draw is seeded
        backbone, resolution = load_backbone(WIDE_RESNET50, self.weights_policy, opts.backbone_path)
        model = Patchcore(backbone=backbone, layers=["layer2", "layer3"], pre_trained=False,
                          coreset_sampling_ratio=opts.coreset_sampling_ratio, num_neighbors=opts.num_neighbors,
                          pre_processor=Patchcore.configure_pre_processor(image_size=(size, size)),
                          post_processor=raw_post_processor(), evaluator=False, visualizer=False)
        pool = TrainingPool(image_tensor(data.normal_train, size), {}, 0.0)
        with tempfile.TemporaryDirectory(prefix="acbench-patchcore-") as root:
            make_engine(device, 1, Path(root)).fit(model, train_dataloaders=train_loader(pool, 8, seed,
                                                                                         normals_only=True))
        if progress:
            progress(1, 2)
        evalset = load_eval_set(data, size)
        maps, scores = predict_raw(model, evalset.images, device)
        write_raw_outputs(workdir, evalset, scores, maps, data.root)
        values = detection_metrics(evalset.labels, scores, evalset.masks.numpy(), maps)
        if progress:
            progress(2, 2)
        return metric_rows(values, {"weights": weights_column(resolution), "preset": self.preset,
                                    "image_size": size, "n_synthetic": 0})
