"""Intra-cluster LPIPS (IC-LPIPS): the diversity measure of few-shot anomaly synthesis papers.

Two recipes are used in the literature, and their numbers differ by 2-4x, so every value names its
variant:

* `dfmgan` — DFMGAN (Duan et al., AAAI 2023, `metrics/lpips.py::compute_clpips`), reused by
  AnomalyDiffusion's paper and AnomalyControl. LPIPS v0.1 with the AlexNet trunk, inputs in
  [-1, 1]. References: the real training anomalies of the type. Each generated image joins the
  reference with the smallest LPIPS (first index on ties) while that cluster has fewer than 200
  members (first come, in generation order; later ones are dropped). A cluster with >= 2 members
  scores the mean LPIPS over all ordered pairs of distinct members; one with <= 1 member scores 0.
  `ic_lpips` = mean over all clusters; `ic_lpips_nonzero` (DFMGAN's `clpips_rz`) = mean over the
  clusters whose score is non-zero. (DFMGAN compared uint8 references against [-1, 1] samples;
  here both are in [-1, 1], the range LPIPS expects.)
* `anomalydiffusion` — the script the AnomalyDiffusion authors released later (`cal_ic_lpips.py`,
  after CDC, Ojha et al. CVPR 2021): VGG16 trunk, images resized to 256 (bilinear), references =
  the first floor(n/3) real anomalies, ties go to the later reference (`<=`), each cluster randomly
  subsampled to at most 50 members (seeded here, unseeded there), score = mean over unordered
  pairs, clusters with < 2 members excluded; the type score is the mean over the remaining clusters.

`ClusteredLpips` (update/compute) and `ic_lpips` (functional) compute each image's LPIPS features
once and every score from per-cluster sums of them (see `lpips_features` and `ClusteredLpips`).
`ic_lpips_reference` is the plain loop (one generated image against all references at a time,
cyclic shifts for the pairs, as DFMGAN does) that the fast path is tested and benchmarked against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import lpips
import numpy as np
import torch
from torch import Tensor

from acbench.metrics.lpips_features import LpipsFeatures


@dataclass(frozen=True)
class IcLpipsVariant:
    name: str
    net: str
    size: int  # images are resized to size x size before LPIPS
    cap: int  # at most this many members per cluster
    cap_policy: Literal["first", "random"]  # first come in generation order, or a seeded subsample
    ties: Literal["first", "last"]  # which reference wins equal distances
    singletons: Literal["zero", "exclude"]  # clusters with < 2 members score 0, or are left out


DFMGAN = IcLpipsVariant("dfmgan", "alex", 256, 200, "first", "first", "zero")
ANOMALYDIFFUSION = IcLpipsVariant("anomalydiffusion", "vgg", 256, 50, "random", "last", "exclude")
VARIANTS = {v.name: v for v in (DFMGAN, ANOMALYDIFFUSION)}


@dataclass
class IcLpipsResult:
    variant: IcLpipsVariant
    cluster_sizes: list[int]  # members kept per reference
    cluster_scores: list[float]  # mean pair LPIPS; NaN for clusters with < 2 members

    @property
    def score(self) -> float:
        """The variant's headline value (NaN when no cluster qualifies)."""
        if self.variant.singletons == "zero":
            return _mean([0.0 if math.isnan(s) else s for s in self.cluster_scores])
        return _mean([s for s in self.cluster_scores if not math.isnan(s)])

    @property
    def score_nonzero(self) -> float:
        """Mean over clusters with a non-zero score (DFMGAN's `clpips_rz`)."""
        return _mean([s for s in self.cluster_scores if not math.isnan(s) and s != 0.0])


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def assign(distances: Tensor, ties: str) -> Tensor:
    """Index of the nearest reference per row of a (n, k) distance matrix."""
    if ties == "first":
        return distances.argmin(dim=1)  # torch returns the first minimal index
    return distances.shape[1] - 1 - distances.flip(1).argmin(dim=1)


def select_members(assignments: list[int], n_clusters: int, variant: IcLpipsVariant, seed: int) -> list[list[int]]:
    """The generated-image indices each cluster keeps under the variant's cap."""
    members: list[list[int]] = [[] for _ in range(n_clusters)]
    for index, cluster in enumerate(assignments):
        if variant.cap_policy == "random" or len(members[cluster]) < variant.cap:
            members[cluster].append(index)
    if variant.cap_policy == "random":
        members = [_subsample(m, variant.cap, seed, j) for j, m in enumerate(members)]
    return members


def _subsample(members: list[int], cap: int, seed: int, cluster: int) -> list[int]:
    if len(members) <= cap:
        return members
    rng = np.random.default_rng([seed, cluster])
    return sorted(int(i) for i in rng.permutation(np.asarray(members))[:cap])


class ClusteredLpips:
    """IC-LPIPS of one anomaly type, torchmetrics-style: `update(batch)` ... `compute()`.

    Images are float tensors in [-1, 1], already at `variant.size`. A cluster's score needs only sums of
    its members' LPIPS vectors u (see `lpips_features`): over ordered pairs of distinct members,
    sum ||u_i - u_j||^2 = 2m sum |u_i|^2 - 2 |sum u_i|^2, so no pair is ever formed. Under the `first`
    cap policy the members are known as images arrive and each cluster keeps a float64 running sum
    and sum of squared norms (memory: references x feature size), nothing per image. Under the
    `random` policy the members are drawn at the end, so the images are kept (features of the ones
    that fit in `feature_cache_bytes`) and the drawn members' features computed in `compute`.
    """

    def __init__(self, references: Tensor, variant: IcLpipsVariant, features: LpipsFeatures, seed: int = 0,
                 batch_size: int = 32, feature_cache_bytes: int = 2**31) -> None:
        if len(references) == 0:
            raise ValueError("IC-LPIPS needs at least one reference image")
        self.variant, self.features, self.seed = variant, features, seed
        self.batch_size, self.cache_budget = batch_size, feature_cache_bytes
        self.reference_features = torch.cat([features(b) for b in references.split(batch_size)])
        self.reset()

    def reset(self) -> None:
        self.assignments: list[int] = []
        self.counts = [0] * len(self.reference_features)
        self.sums: Tensor | None = None  # (references, D) float64: sum of u per cluster (`first` policy)
        self.sumsq: Tensor | None = None  # (references,) float64: sum of |u|^2 per cluster
        self.cached: dict[int, Tensor] = {}  # `random` policy: features that fit the budget...
        self.images: dict[int, Tensor] = {}  # ... and the images of the others
        self.cached_bytes = 0

    def update(self, images: Tensor) -> None:
        feats = self.features(images)
        nearest = assign(self.features.distances(feats, self.reference_features), self.variant.ties).tolist()
        first = len(self.assignments)
        self.assignments += nearest
        if self.variant.cap_policy == "first":
            self._accumulate(feats, nearest)
            return
        for row in range(len(nearest)):  # `random`: every image may be drawn in `compute`
            size = feats[row].numel() * feats.element_size()
            if self.cached_bytes + size <= self.cache_budget:
                self.cached[first + row] = feats[row].clone()
                self.cached_bytes += size
            else:
                self.images[first + row] = images[row].detach()

    def _accumulate(self, feats: Tensor, nearest: list[int]) -> None:
        keep = []
        for row, cluster in enumerate(nearest):
            if self.counts[cluster] < self.variant.cap:  # later ones are dropped, as DFMGAN drops them
                self.counts[cluster] += 1
                keep.append(row)
        if not keep:
            return
        if self.sums is None:
            self.sums = torch.zeros(len(self.counts), feats.shape[1], dtype=torch.float64, device=feats.device)
            self.sumsq = torch.zeros(len(self.counts), dtype=torch.float64, device=feats.device)
        rows = torch.tensor(keep, device=feats.device)
        kept = feats.index_select(0, rows).double()
        clusters = torch.tensor([nearest[r] for r in keep], device=feats.device)
        self.sums.index_add_(0, clusters, kept)
        self.sumsq.index_add_(0, clusters, (kept * kept).sum(dim=1))

    def compute(self) -> IcLpipsResult:
        members = select_members(self.assignments, len(self.reference_features), self.variant, self.seed)
        if self.variant.cap_policy == "first":
            scores = [self._score(len(m), self.sums[j], self.sumsq[j]) if len(m) >= 2 else float("nan")
                      for j, m in enumerate(members)]
        else:
            scores = [self._drawn_score(m) if len(m) >= 2 else float("nan") for m in members]
        return IcLpipsResult(self.variant, [len(m) for m in members], scores)

    @staticmethod
    def _score(m: int, total: Tensor, sumsq: Tensor) -> float:
        """Mean LPIPS over the m(m-1) ordered pairs of distinct members, from their sums."""
        return float((2 * m * sumsq - 2 * total.dot(total)) / (m * (m - 1)))

    def _drawn_score(self, members: list[int]) -> float:
        total, sumsq = None, torch.zeros((), dtype=torch.float64)
        for start in range(0, len(members), self.batch_size):
            chunk = members[start:start + self.batch_size]
            missing = [i for i in chunk if i not in self.cached]
            computed = dict(zip(missing, self.features(torch.stack([self.images[i] for i in missing])), strict=True)) \
                if missing else {}
            feats = torch.stack([self.cached[i] if i in self.cached else computed[i] for i in chunk]).double()
            part = feats.sum(dim=0)
            total = part if total is None else total + part
            sumsq = sumsq.to(feats.device) + (feats * feats).sum()
        return self._score(len(members), total, sumsq)


def ic_lpips(generated: Tensor, references: Tensor, variant: IcLpipsVariant, features: LpipsFeatures,
             seed: int = 0, batch_size: int = 32) -> IcLpipsResult:
    """Functional twin of `ClusteredLpips` (images in [-1, 1], in generation order)."""
    metric = ClusteredLpips(references, variant, features, seed=seed, batch_size=batch_size)
    for batch in generated.split(batch_size):
        metric.update(batch)
    return metric.compute()


@torch.no_grad()
def ic_lpips_reference(generated: Tensor, references: Tensor, variant: IcLpipsVariant, model: lpips.LPIPS,
                       seed: int = 0) -> IcLpipsResult:
    """The straightforward computation with the `lpips` module's own forward (for tests and benchmarks)."""
    device = next(model.parameters()).device
    generated, references = generated.to(device), references.to(device)
    k = len(references)
    assignments = []
    for image in generated:  # one generated image against all references, as DFMGAN does
        dist = model(image[None].expand(k, -1, -1, -1), references).flatten()
        assignments.append(int(assign(dist[None], variant.ties)[0]))
    members = select_members(assignments, k, variant, seed)
    scores = []
    for cluster in members:
        m = len(cluster)
        if m < 2:
            scores.append(float("nan"))
            continue
        images = generated[cluster]
        total = 0.0  # python float: float64 accumulation
        for shift in range(1, m):  # the cyclic shifts pair every member with every other one
            total += float(model(images, images.roll(shift, dims=0)).double().sum())
        scores.append(total / (m * (m - 1)))
    return IcLpipsResult(variant, [len(m) for m in members], scores)
