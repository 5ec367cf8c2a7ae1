"""IC-LPIPS: the fast feature-cached computation against the plain loop over the `lpips` module."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from acbench.metrics.ic_lpips import (
    ANOMALYDIFFUSION,
    DFMGAN,
    IcLpipsResult,
    assign,
    ic_lpips,
    ic_lpips_reference,
    select_members,
)
from acbench.metrics.lpips_features import LpipsFeatures, build_lpips
from acbench.weights import Resolution

torch.set_num_threads(1)
RANDOM = Resolution("lpips", "random")


@pytest.fixture(scope="module")
def alex():
    torch.manual_seed(0)
    return build_lpips("alex", RANDOM)


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(1)
    return build_lpips("vgg", RANDOM)


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def _clustered_set(size: int = 48):
    """References and generated images that fall into clusters of 7 (over a cap of 4), 1, 3 and 0."""
    refs = _images(4, size, 0)
    noise = _images(11, size, 1) * 0.05
    order = [0, 2, 0, 0, 1, 0, 2, 0, 0, 2, 0]  # interleaved, so "first come" is tested
    generated = torch.stack([(refs[c] + n).clamp(-1, 1) for c, n in zip(order, noise, strict=True)])
    return refs, generated


def test_feature_distances_equal_the_lpips_forward(alex):
    feats = LpipsFeatures(alex)
    a, b = _images(3, 40, 2), _images(5, 40, 3)
    fast = feats.distances(feats(a), feats(b))
    direct = torch.stack([alex(x[None].expand(len(b), -1, -1, -1), b).flatten() for x in a])
    assert fast.dtype == torch.float64
    assert torch.allclose(fast, direct.double(), atol=1e-6, rtol=0)
    assert float(feats.distances(feats(a), feats(a)).diagonal().abs().max()) < 1e-9


@pytest.mark.parametrize("variant_name", ["dfmgan", "anomalydiffusion"])
def test_fast_equals_reference_loop_with_empty_single_and_capped_clusters(alex, vgg, variant_name):
    base = DFMGAN if variant_name == "dfmgan" else ANOMALYDIFFUSION
    variant = dataclasses.replace(base, cap=4)
    model = alex if base.net == "alex" else vgg
    refs, generated = _clustered_set()
    reference = ic_lpips_reference(generated, refs, variant, model, seed=3)
    fast = ic_lpips(generated, refs, variant, LpipsFeatures(model), seed=3, batch_size=4)
    assert reference.cluster_sizes == fast.cluster_sizes == [4, 1, 3, 0]
    assert math.isnan(fast.cluster_scores[1]) and math.isnan(fast.cluster_scores[3])
    for got, want in zip(fast.cluster_scores, reference.cluster_scores, strict=True):
        assert got == pytest.approx(want, abs=1e-5, nan_ok=True)
    assert fast.score == pytest.approx(reference.score, abs=1e-5)
    assert fast.score_nonzero == pytest.approx(reference.score_nonzero, abs=1e-5)
    assert fast.score > 0


def _independent_loop(generated, refs, variant, model, seed):
    """DFMGAN's `compute_clpips` / the AnomalyDiffusion script written out inline: nearest reference by a
    plain comparison loop, the cap applied as images arrive (or a seeded subsample), pair means, and the
    variant's aggregation. Shares nothing with acbench.metrics.ic_lpips but the variant's constants."""
    clusters = [[] for _ in refs]
    with torch.no_grad():
        for index, image in enumerate(generated):
            best, best_d = 0, float("inf")
            for j, ref in enumerate(refs):
                d = float(model(image[None], ref[None]))
                if d < best_d or (variant.ties == "last" and d == best_d):
                    best, best_d = j, d
            if variant.cap_policy == "random" or len(clusters[best]) < variant.cap:
                clusters[best].append(index)
        if variant.cap_policy == "random":
            clusters = [c if len(c) <= variant.cap else
                        sorted(int(i) for i in np.random.default_rng([seed, j]).permutation(c)[:variant.cap])
                        for j, c in enumerate(clusters)]
        scores = []
        for members in clusters:
            pairs = [(a, b) for a in members for b in members if a != b]
            scores.append(sum(float(model(generated[a][None], generated[b][None])) for a, b in pairs) / len(pairs)
                          if pairs else None)
    if variant.singletons == "zero":
        headline = sum(s or 0.0 for s in scores) / len(scores)
    else:
        kept = [s for s in scores if s is not None]
        headline = sum(kept) / len(kept)
    nonzero = [s for s in scores if s]
    return [len(c) for c in clusters], headline, sum(nonzero) / len(nonzero)


@pytest.mark.parametrize("variant_name", ["dfmgan", "anomalydiffusion"])
def test_fast_path_equals_an_independent_loop_with_ties_and_caps(alex, vgg, variant_name):
    base = DFMGAN if variant_name == "dfmgan" else ANOMALYDIFFUSION
    variant = dataclasses.replace(base, cap=3)
    model = alex if base.net == "alex" else vgg
    refs, generated = _clustered_set(32)
    refs = torch.cat([refs[:1], refs[:1], refs[1:3]])  # reference 1 duplicates 0: every tie is decided by the rule
    sizes, headline, nonzero = _independent_loop(generated, refs, variant, model, seed=5)
    fast = ic_lpips(generated, refs, variant, LpipsFeatures(model), seed=5, batch_size=4)
    # seven images near reference 0/1 (capped at 3), one near 2, three near 3
    assert sizes == ([3, 0, 1, 3] if variant.ties == "first" else [0, 3, 1, 3])
    assert fast.cluster_sizes == sizes
    assert fast.score == pytest.approx(headline, abs=1e-5)
    assert fast.score_nonzero == pytest.approx(nonzero, abs=1e-5)


def test_first_policy_keeps_running_sums_not_images(alex):
    from acbench.metrics.ic_lpips import ClusteredLpips

    refs, generated = _clustered_set()
    metric = ClusteredLpips(refs, dataclasses.replace(DFMGAN, cap=4), LpipsFeatures(alex), batch_size=4)
    for batch in generated.split(4):
        metric.update(batch)
    assert not metric.cached and not metric.images  # memory does not grow with the number of images
    assert metric.sums.shape == (len(refs), metric.reference_features.shape[1])
    assert metric.counts == [4, 1, 3, 0]  # capped members were never added


def test_small_feature_cache_recomputes_the_same_values(alex):
    refs, generated = _clustered_set(32)
    feats = LpipsFeatures(alex)
    from acbench.metrics.ic_lpips import ClusteredLpips

    drawn = dataclasses.replace(ANOMALYDIFFUSION, cap=3)  # members drawn at the end: images or features kept
    metric = ClusteredLpips(refs, drawn, feats, batch_size=3, feature_cache_bytes=1)  # nothing fits
    for batch in generated.split(3):
        metric.update(batch)
    recomputed = metric.compute()
    assert not metric.cached and len(metric.images) == len(generated)
    assert recomputed.cluster_scores == pytest.approx(ic_lpips(generated, refs, drawn, feats).cluster_scores,
                                                      abs=1e-9, nan_ok=True)


def test_variant_aggregations():
    dfmgan = IcLpipsResult(DFMGAN, [3, 1, 0, 2], [0.4, math.nan, math.nan, 0.2])
    assert dfmgan.score == pytest.approx((0.4 + 0 + 0 + 0.2) / 4)  # empty and singleton clusters count 0
    assert dfmgan.score_nonzero == pytest.approx(0.3)
    ad = IcLpipsResult(ANOMALYDIFFUSION, [3, 1, 0, 2], [0.4, math.nan, math.nan, 0.2])
    assert ad.score == pytest.approx(0.3)  # clusters with < 2 members are excluded
    assert math.isnan(IcLpipsResult(ANOMALYDIFFUSION, [1, 0], [math.nan, math.nan]).score)


def test_ties_and_caps():
    dist = torch.tensor([[0.5, 0.2, 0.2], [0.1, 0.3, 0.1]])
    assert assign(dist, "first").tolist() == [1, 0]
    assert assign(dist, "last").tolist() == [2, 2]
    first = dataclasses.replace(DFMGAN, cap=2)
    assert select_members([0, 0, 1, 0, 1], 3, first, seed=0) == [[0, 1], [2, 4], []]
    rand = dataclasses.replace(ANOMALYDIFFUSION, cap=2)
    picked = select_members([0] * 6 + [1], 2, rand, seed=0)
    assert len(picked[0]) == 2 and set(picked[0]) <= set(range(6)) and picked[1] == [6]
    assert picked == select_members([0] * 6 + [1], 2, rand, seed=0)  # seeded


def test_random_trunk_is_the_same_in_every_run():
    torch.manual_seed(123)  # whatever the global RNG state
    first = build_lpips("alex", RANDOM).net.slice1[0].weight.clone()
    torch.rand(7)
    assert torch.equal(first, build_lpips("alex", RANDOM).net.slice1[0].weight)
