"""Inception Score, FID and KID on the FID-InceptionV3 of torch-fidelity.

* IS follows torch-fidelity's ISC exactly (`isc_features_to_metric`): `logits_unbiased` of the TF
  2015-12-05 InceptionV3 (images resized to 299 the TF1 way), rows permuted with numpy
  RandomState(2020), float64, 10 splits of rows i*N/s ... (i+1)*N/s; IS = mean over splits of
  exp(mean KL(p || mean p)). This is what AnomalyDiffusion's authors ran (`fidelity --isc`), per
  defect type. torchmetrics' `InceptionScore` permutes with torch's global RNG and differs.
* FID and KID are torchmetrics' implementations, fed with the same extractor's 2048-d pool
  features, so one pass per image serves all three metrics (features are cached per file).

Random weights (tests, the offline demo) need He initialisation: PyTorch's default init makes the
activations vanish (FID 0, IS 1 for everything).
"""

from __future__ import annotations

import io
import math
import warnings
from collections import OrderedDict
from functools import cache
from pathlib import Path

import torch
from torch import Tensor, nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from acbench.metrics.images import uint8_batches
from acbench.weights import Policy, Resolution, resolve_fid_inception

FEATURES = ("2048", "logits_unbiased")
POOL_DIM, LOGITS_DIM = 2048, 1008
RANDOM_SEED = 0
KID_SUBSETS, KID_MAX_SUBSET = 100, 1000  # torch-fidelity / torchmetrics defaults


class _FreshInceptionV3(FeatureExtractorInceptionV3):
    """The torch-fidelity network without its weight loading (the constructor always loads some)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


def build_fid_inception(resolution: Resolution) -> FeatureExtractorInceptionV3:
    """torch-fidelity's extractor returning (pool 2048, logits_unbiased), loaded from `resolution`."""
    if not resolution.is_random:
        return FeatureExtractorInceptionV3("inception-v3-compat", list(FEATURES),
                                           feature_extractor_weights_path=resolution.path)
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.random.fork_rng(devices=[]):  # every parameter, biases included, is the same in every run
        torch.manual_seed(RANDOM_SEED)
        model = _FreshInceptionV3("inception-v3-compat-random", list(FEATURES), feature_extractor_weights_path=empty)
    _he_init(model, RANDOM_SEED)
    return model


@torch.no_grad()
def _he_init(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("conv.weight"):
            param.copy_(torch.randn(param.shape, generator=generator) * math.sqrt(2.0 / param[0].numel()))
        elif name == "fc.weight":
            param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[1]))


def cached_inception(policy: Policy, device: str) -> tuple[FeatureExtractorInceptionV3, Resolution]:
    """The extractor the policy resolves to; built once per (weights file, device) and process."""
    resolution = resolve_fid_inception(policy)
    return _built(resolution, device), resolution


@cache
def _built(resolution: Resolution, device: str) -> FeatureExtractorInceptionV3:
    return build_fid_inception(resolution).to(device)


# --------------------------------------------------------------------------------------------- #
# Features of image files, computed once per process and file


class InceptionFeatureCache:
    """(pool, logits) per image file, keyed by weights, path, modification time and load size."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._store: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()

    def features(self, paths: list[Path], model: FeatureExtractorInceptionV3, weights_key: str,
                 size: int | None = None, batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """(N, 2048) pool features and (N, 1008) logits_unbiased, float32 on the CPU."""
        keys = [(weights_key, str(Path(p).resolve()), Path(p).stat().st_mtime_ns, size) for p in paths]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        if missing:
            device = next(model.parameters()).device
            rows = iter(missing)
            for batch in uint8_batches([paths[i] for i in missing], batch_size, size):
                with torch.no_grad():
                    pool, logits = model(batch.to(device))
                for p, lg in zip(pool.float().cpu(), logits.float().cpu(), strict=True):
                    self._put(keys[next(rows)], (p, lg))
        pairs = [self._store[k] for k in keys]
        for k in keys:
            self._store.move_to_end(k)
        return torch.stack([p for p, _ in pairs]), torch.stack([lg for _, lg in pairs])

    def _put(self, key: tuple, value: tuple[Tensor, Tensor]) -> None:
        self._store[key] = value
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)


FEATURE_CACHE = InceptionFeatureCache()


def weights_key(resolution: Resolution) -> str:
    return f"random-he-{RANDOM_SEED}" if resolution.is_random else str(resolution.path)


# --------------------------------------------------------------------------------------------- #
# Inception Score


def is_splits(n: int, splits: int = 10) -> int:
    """torch-fidelity's 10 splits, fewer for sets smaller than 10 images (every split non-empty)."""
    return max(1, min(splits, n))


def inception_score(logits: Tensor, splits: int = 10, shuffle: bool = True, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) of the IS of `logits_unbiased` rows, with torch-fidelity's exact arithmetic."""
    out = isc_features_to_metric(logits.detach().cpu(), splits=splits, shuffle=shuffle, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


class InceptionScore:
    """IS, torchmetrics-style: `update(uint8 NCHW images)` ... `compute() -> (mean, std)`."""

    def __init__(self, model: FeatureExtractorInceptionV3, splits: int = 10) -> None:
        self.model, self.splits = model, splits
        self.reset()

    def reset(self) -> None:
        self.logits: list[Tensor] = []

    @torch.no_grad()
    def update(self, images: Tensor) -> None:
        _, logits = self.model(images.to(next(self.model.parameters()).device))
        self.logits.append(logits.float().cpu())

    def compute(self) -> tuple[float, float]:
        logits = torch.cat(self.logits)
        return inception_score(logits, is_splits(len(logits), self.splits))


# --------------------------------------------------------------------------------------------- #
# FID and KID from precomputed features (torchmetrics' arithmetic)


class _Precomputed(nn.Module):
    """Feeds already extracted features to torchmetrics (its custom-extractor path calls module(x))."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(generated: Tensor, real: Tensor) -> float:
    """FID between two (N, d) feature sets (torchmetrics' `FrechetInceptionDistance`)."""
    metric = FrechetInceptionDistance(feature=_Precomputed(generated.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(generated.double(), real=False)
    return float(metric.compute())


def kid_subset_size(n_generated: int, n_real: int) -> int:
    """torchmetrics' 1000, reduced to the smaller set when a set is smaller."""
    return min(KID_MAX_SUBSET, n_generated, n_real)


def kernel_inception_distance(generated: Tensor, real: Tensor, subset_size: int | None = None,
                              subsets: int = KID_SUBSETS, seed: int = 0) -> tuple[float, float]:
    """(mean, std) KID between two (N, d) feature sets; the subsets are drawn reproducibly from `seed`."""
    size = subset_size or kid_subset_size(len(generated), len(real))
    with warnings.catch_warnings():  # its "features are kept in memory" notice: they are already in memory
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(generated.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(generated.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws subsets from the global RNG
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)
