"""The registered generation-quality metrics: `is`, `ic-lpips`, `ic-lpips-ad`, `fid`, `kid`.

Each scores image sets grouped by anomaly type (`score_sets`), so the same code serves a study
(`score(synthetic, data)`) and `acbench evaluate quality` on user folders. Rows: one per type and
the category value = mean over the types (the literature's aggregation), with the columns
`weights` ("pretrained" or "random": random ones are not comparable), `n_generated`,
`n_reference`, and `variant_of_metric` where the literature has several recipes. Nothing is left out
silently: a type row says `references: shared` when one ungrouped reference set served every type,
and the category row counts the types its mean covers (`n_types`) and those skipped for lack of
references or a NaN value (`n_types_skipped`).

References per metric, in a study: IC-LPIPS clusters around the synthesis split of the type (the
real anomalies a method may train on); FID and KID compare with the held-out evaluation anomalies
of the type; IS needs none.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from acbench.data.category import CategoryData
from acbench.metrics.base import QualityMetric, coverage
from acbench.metrics.ic_lpips import ANOMALYDIFFUSION, DFMGAN, ClusteredLpips, IcLpipsVariant
from acbench.metrics.images import ImageSets, example_sets, load_uint8, synthetic_sets, to_signed_unit
from acbench.metrics.inception import (
    FEATURE_CACHE,
    cached_inception,
    frechet_distance,
    inception_score,
    is_splits,
    kernel_inception_distance,
    kid_subset_size,
    weights_key,
)
from acbench.metrics.lpips_features import LpipsFeatures, cached_lpips
from acbench.results import MetricValue
from acbench.synthesis import SyntheticSet, WeightRequirement
from acbench.weights import FID_INCEPTION_FILE, FID_INCEPTION_URL, LPIPS_BACKBONE_FILES, TORCHVISION_MODELS_URL

log = logging.getLogger(__name__)
BATCH_SIZE = 32


def references_for(anomaly_type: str, reference: ImageSets) -> list[Path]:
    """The type's own references; a single ungrouped reference set serves every type."""
    if anomaly_type in reference:
        return reference[anomaly_type]
    if len(reference) == 1:
        return next(iter(reference.values()))
    return []


def reference_kind(anomaly_type: str, reference: ImageSets) -> str:
    """'own' (the type's references) or 'shared' (the one ungrouped set stands in for every type)."""
    return "own" if anomaly_type in reference or not reference else "shared"


def rows_with_category_mean(metric: str, per_type: dict[str, float], extra: dict, counts: dict[str, tuple],
                            generated: ImageSets | None = None, reference: ImageSets | None = None) \
        -> list[MetricValue]:
    """Per-type rows plus the category row (mean over the types with a finite value); with the
    `generated` and `reference` sets, rows say whose references they used and how many types the
    mean leaves out."""
    def type_extra(t: str) -> dict:
        out = {**extra, "n_generated": counts[t][0], "n_reference": counts[t][1]}
        if reference is not None:
            out["references"] = reference_kind(t, reference)
        return out

    rows = [MetricValue(metric, v, anomaly_type=t, extra=type_extra(t)) for t, v in per_type.items()]
    finite = [v for v in per_type.values() if math.isfinite(v)]
    if per_type:
        total = [sum(c[i] for c in counts.values()) for i in (0, 1)]
        rows.append(MetricValue(metric, float(np.mean(finite)) if finite else float("nan"),
                                extra={**extra, "n_generated": total[0], "n_reference": total[1],
                                       **coverage(per_type, list(generated) if generated is not None else None)}))
    return rows


def _weights_column(is_random: bool) -> str:
    return "random" if is_random else "pretrained"


class _SetMetric(QualityMetric):
    """Scores generated image sets against reference sets; subclasses choose the references."""

    def score(self, synthetic: SyntheticSet, data: CategoryData) -> list[MetricValue]:
        return self.score_sets(synthetic_sets(synthetic), self.references(data))

    def references(self, data: CategoryData) -> ImageSets:
        return example_sets(data.eval_anomalies)

    def score_sets(self, generated: ImageSets, reference: ImageSets) -> list[MetricValue]:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------- #
# IC-LPIPS


class _IcLpipsMetric(_SetMetric):
    higher_is_better = True
    variant: IcLpipsVariant
    seed = 0  # the AnomalyDiffusion variant's cluster subsample

    def required_weights(self) -> list[WeightRequirement]:
        filename = LPIPS_BACKBONE_FILES[self.variant.net]
        return [WeightRequirement(f"lpips-{self.variant.net}", f"ImageNet {self.variant.net} trunk of LPIPS",
                                  filename=filename, url=TORCHVISION_MODELS_URL + filename)]

    def references(self, data: CategoryData) -> ImageSets:
        return example_sets(data.synthesis)

    def _load(self, paths: list[Path]) -> torch.Tensor:
        return to_signed_unit(torch.from_numpy(np.stack([load_uint8(p, self.variant.size) for p in paths]))
                              .permute(0, 3, 1, 2))

    def cluster(self, generated: list[Path], references: list[Path], features: LpipsFeatures):
        metric = ClusteredLpips(self._load(references), self.variant, features, seed=self.seed,
                                batch_size=BATCH_SIZE)
        for start in range(0, len(generated), BATCH_SIZE):
            metric.update(self._load(generated[start:start + BATCH_SIZE]))
        return metric.compute()

    def results(self, generated: ImageSets, reference: ImageSets):
        model, resolution = cached_lpips(self.variant.net, self.weights_policy, self.device)
        features = LpipsFeatures(model)
        out, counts = {}, {}
        for atype, paths in generated.items():
            refs = references_for(atype, reference)
            if not refs:  # counted in the category row's n_types_skipped
                log.warning("%s: no reference images for type '%s'; skipped", self.name, atype)
                continue
            out[atype] = self.cluster(paths, refs, features)
            counts[atype] = (len(paths), len(refs))
        extra = {"variant_of_metric": self.variant.name, "weights": _weights_column(resolution.is_random)}
        return out, counts, extra


class IcLpips(_IcLpipsMetric):
    name = "ic-lpips"
    description = "intra-cluster LPIPS, DFMGAN recipe (AlexNet, cap 200, empty clusters count 0)"
    variant = DFMGAN

    def score_sets(self, generated: ImageSets, reference: ImageSets) -> list[MetricValue]:
        results, counts, extra = self.results(generated, reference)
        sets = {"generated": generated, "reference": reference}
        return (rows_with_category_mean("ic_lpips", {t: r.score for t, r in results.items()}, extra, counts, **sets)
                + rows_with_category_mean("ic_lpips_nonzero", {t: r.score_nonzero for t, r in results.items()},
                                          extra, counts, **sets))


class IcLpipsAD(_IcLpipsMetric):
    name = "ic-lpips-ad"
    description = "intra-cluster LPIPS, AnomalyDiffusion script (VGG, 256 px, 50 per cluster, seeded)"
    variant = ANOMALYDIFFUSION

    def score_sets(self, generated: ImageSets, reference: ImageSets) -> list[MetricValue]:
        results, counts, extra = self.results(generated, reference)
        return rows_with_category_mean("ic_lpips_ad", {t: r.score for t, r in results.items()}, extra, counts,
                                       generated, reference)


# --------------------------------------------------------------------------------------------- #
# Inception Score, FID, KID


class _InceptionMetric(_SetMetric):
    def required_weights(self) -> list[WeightRequirement]:
        return [WeightRequirement("fid-inception-v3", "FID-InceptionV3 (TF 2015-12-05, torch-fidelity)",
                                  filename=FID_INCEPTION_FILE, url=FID_INCEPTION_URL)]

    def extractor(self):
        """(network, resolution): resolved once per process, policy and device."""
        return cached_inception(self.weights_policy, self.device)

    def features(self, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        model, resolution = self.extractor()
        return FEATURE_CACHE.features(paths, model, weights_key(resolution), batch_size=BATCH_SIZE)

    def weights_column(self) -> dict:
        return {"weights": _weights_column(self.extractor()[1].is_random)}


class InceptionScore(_InceptionMetric):
    name = "is"
    higher_is_better = True
    description = "Inception Score per defect type (torch-fidelity ISC: logits_unbiased, seed 2020, 10 splits)"

    def score_sets(self, generated: ImageSets, reference: ImageSets) -> list[MetricValue]:
        values, counts = {}, {}
        for atype, paths in generated.items():
            _, logits = self.features(paths)
            values[atype] = inception_score(logits, is_splits(len(paths)))[0]
            counts[atype] = (len(paths), 0)
        return rows_with_category_mean("is", values, self.weights_column(), counts, generated)


class _DistanceMetric(_InceptionMetric):
    higher_is_better = False

    def distance(self, generated: torch.Tensor, real: torch.Tensor) -> float:
        raise NotImplementedError

    def score_sets(self, generated: ImageSets, reference: ImageSets) -> list[MetricValue]:
        values, counts = {}, {}
        for atype, paths in generated.items():
            refs = references_for(atype, reference)
            if len(paths) < 2 or len(refs) < 2:  # counted in the category row's n_types_skipped
                log.warning("%s: type '%s' has %d generated and %d real images (>= 2 each needed); skipped",
                            self.name, atype, len(paths), len(refs))
                continue
            gen_pool, _ = self.features(paths)
            real_pool, _ = self.features(refs)
            values[atype] = self.distance(gen_pool, real_pool)
            counts[atype] = (len(paths), len(refs))
        return rows_with_category_mean(self.metric_name, values, self.weights_column(), counts, generated,
                                       reference)


class Fid(_DistanceMetric):
    name = "fid"
    metric_name = "fid"
    description = "Frechet Inception Distance to the held-out real anomalies of the type (torchmetrics)"

    def distance(self, generated: torch.Tensor, real: torch.Tensor) -> float:
        return frechet_distance(generated, real)


class Kid(_DistanceMetric):
    name = "kid"
    metric_name = "kid"
    description = "Kernel Inception Distance to the held-out real anomalies (subset size fits small sets)"

    def distance(self, generated: torch.Tensor, real: torch.Tensor) -> float:
        return kernel_inception_distance(generated, real, kid_subset_size(len(generated), len(real)))[0]
