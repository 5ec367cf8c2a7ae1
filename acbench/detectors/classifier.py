"""`resnet-classifier`: anomaly-type classification (AnomalyDiffusion protocol).

ResNet-34 (ImageNet weights when available) with a new head, trained on the synthetic images
labelled by type; tested on every held-out real anomaly; top-1 accuracy over the whole test set
(the original code returned the accuracy of its last batch of 100 only).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from acbench.data.category import CategoryData
from acbench.data.io import atomic_write
from acbench.detectors.backbones import RESNET34, load_backbone, weights_column
from acbench.detectors.base import Detector
from acbench.detectors.common import (
    SyntheticOptions,
    category_records,
    check_disjoint,
    image_tensor,
    resolve_device,
    select_pairs,
    to_float,
)
from acbench.detectors.metrics import classification_accuracy
from acbench.errors import UserError
from acbench.results import MetricValue
from acbench.synthesis import SyntheticSet, WeightRequirement

log = logging.getLogger(__name__)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClassifierPreset:
    image_size: int
    epochs: int
    repeats: int  # passes over the synthetic images per epoch (the original: 5)
    lr: float
    milestones: tuple[int, ...]


PRESETS = {
    "paper": ClassifierPreset(image_size=256, epochs=30, repeats=5, lr=1e-4, milestones=(24, 27)),
    "tiny": ClassifierPreset(image_size=64, epochs=3, repeats=2, lr=1e-3, milestones=(2,)),
}


class ClassifierOptions(SyntheticOptions):
    imagenet_normalize: bool = Field(False, description="normalise inputs with ImageNet statistics (the "
                                     "original code does not)")
    backbone_path: str | None = Field(None, description="local resnet34-b627a593.pth (else TORCH_HOME)")


class ResNetClassifier(Detector):
    """ResNet-34 anomaly-type classifier trained on synthetic images only."""

    Options = ClassifierOptions
    uses_synthetic: ClassVar[bool] = True
    description: ClassVar[str] = "ResNet-34 anomaly-type classifier (accuracy on real anomalies)"

    def required_weights(self) -> list[WeightRequirement]:
        return [RESNET34.requirement()]

    def run(self, data: CategoryData, synthetic: SyntheticSet | None, workdir: Path, seed: int,
            progress: Callable[[int, int], None] | None = None) -> list[MetricValue]:
        if self.preset not in PRESETS:
            raise UserError(f"detector preset '{self.preset}' is unknown; use one of {', '.join(PRESETS)}")
        if synthetic is None:
            raise UserError("resnet-classifier trains on synthetic images: give it a synthetic set")
        if self.options.select_on_test:
            raise UserError("options.select_on_test: only unet-localization reproduces the test-set selection; "
                            "remove it for resnet-classifier")
        preset, opts, device = PRESETS[self.preset], self.options, resolve_device(self.device)
        size, epochs = opts.image_size or preset.image_size, opts.epochs or preset.epochs
        records = select_pairs(category_records(synthetic, data), opts.n_synthetic, seed)
        classes = sorted({r.anomaly_type for r in records})
        tests = [e for t in classes for e in data.eval_anomalies.get(t, [])]
        if len(classes) < 2 or not tests:
            raise UserError(f"{synthetic.index_path}: classification needs at least two anomaly types that "
                            f"also have real evaluation images in '{data.category}'")
        skipped = sorted(set(data.eval_anomalies) - set(classes))
        if skipped:
            log.warning("resnet-classifier: no synthetic images of %s; those real anomalies are not tested", skipped)
        check_disjoint([e.image_path for e in tests], data)
        torch.manual_seed(seed)
        model, resolution = load_backbone(RESNET34, self.weights_policy, opts.backbone_path)
        model.fc = torch.nn.Linear(model.fc.in_features, len(classes))
        images = image_tensor([r.image for r in records], size)
        labels = torch.tensor([classes.index(r.anomaly_type) for r in records])
        model = self._train(model.to(device), images, labels, preset, epochs, seed, device, progress)
        predicted = self._predict(model, image_tensor([e.image_path for e in tests], size), device)
        truth, guess = [e.anomaly_type for e in tests], [classes[i] for i in predicted]
        self._write_predictions(workdir, data, tests, guess)
        extra = {"weights": weights_column(resolution), "synthetic_ratio": opts.synthetic_ratio,
                 "n_synthetic": len(records), "selection": "last", "preset": self.preset, "image_size": size}
        rows = [MetricValue("accuracy", classification_accuracy(truth, guess), "classification", "", dict(extra))]
        for atype in classes:
            pairs = [(t, g) for t, g in zip(truth, guess, strict=True) if t == atype]
            if pairs:
                rows.append(MetricValue("accuracy", classification_accuracy(*map(list, zip(*pairs, strict=True))),
                                        "classification", atype, dict(extra)))
        return rows

    def _inputs(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = to_float(images, device)
        if self.options.imagenet_normalize:
            mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
            x = (x - mean) / torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        return x

    def _train(self, model, images, labels, preset: ClassifierPreset, epochs: int, seed: int,
               device: torch.device, progress) -> torch.nn.Module:
        optimizer = torch.optim.Adam(model.parameters(), lr=preset.lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(preset.milestones), gamma=0.2)
        rng = np.random.default_rng(seed)
        for epoch in range(epochs):
            model.train()
            order = np.concatenate([rng.permutation(len(images)) for _ in range(preset.repeats)])
            for start in range(0, len(order), 8):
                idx = torch.from_numpy(order[start : start + 8])
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits = model(self._inputs(images[idx], device))
                loss = torch.nn.functional.cross_entropy(logits.float(), labels[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
            if progress:
                progress(epoch + 1, epochs)
        return model

    @torch.no_grad()
    def _predict(self, model, images: torch.Tensor, device: torch.device) -> list[int]:
        model.eval()
        out = [model(self._inputs(images[s : s + 32], device)).argmax(dim=1).cpu() for s in range(0, len(images), 32)]
        return torch.cat(out).tolist()

    @staticmethod
    def _write_predictions(workdir: Path, data: CategoryData, tests, guess: list[str]) -> None:
        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["file", "label", "anomaly_type", "predicted_type"])
                for example, predicted in zip(tests, guess, strict=True):
                    writer.writerow([example.image_path.relative_to(data.root).as_posix(), 1, example.anomaly_type,
                                     predicted])

        atomic_write(workdir / "predictions.csv", write)
