"""IS, FID and KID against torch-fidelity on the same weights; FID and KID behaviour on small sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image

from acbench.metrics.images import folder_sets, uint8_batches
from acbench.metrics.inception import (
    FEATURE_CACHE,
    InceptionScore,
    build_fid_inception,
    frechet_distance,
    inception_score,
    is_splits,
    kernel_inception_distance,
    kid_subset_size,
    weights_key,
)
from acbench.metrics.quality import Fid, Kid
from acbench.metrics.quality import InceptionScore as IsPlugin
from acbench.weights import FID_INCEPTION_FILE, Resolution

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A He-initialised FID-Inception saved under its exact torch-hub name (with sharper logits, so IS > 1)."""
    model = build_fid_inception(Resolution("fid-inception-v3", "random"))
    state = model.state_dict()
    state["fc.weight"] = state["fc.weight"] * 30
    home = tmp_path_factory.mktemp("torch_home")
    path = home / "hub" / "checkpoints" / FID_INCEPTION_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return home, path


def _write_images(folder, n: int, seed: int, size: int = 48, noise: float = 0.0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n, 4, 4, 3)).astype(np.float64)  # coarse colour layouts differ
    base = blocks.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    for i, img in enumerate(base):
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255) if noise else img
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture()
def pretrained_home(inception_file, monkeypatch):
    home, _ = inception_file
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("ACBENCH_OFFLINE", "1")
    return home


def test_is_equals_torch_fidelity_isc(tmp_path, inception_file, pretrained_home):
    _, weights = inception_file
    folder = _write_images(tmp_path / "gen", 13, seed=0)
    rows = IsPlugin(weights="pretrained").score_sets(folder_sets(folder), {})
    splits = is_splits(13)
    want = torch_fidelity.calculate_metrics(input1=str(folder), isc=True, isc_splits=splits, cuda=False,
                                            feature_extractor_weights_path=str(weights), verbose=False,
                                            cache=False, save_cpu_ram=True)["inception_score_mean"]
    assert splits == 10
    assert rows[0].value == pytest.approx(want, abs=1e-4)
    assert rows[0].extra["weights"] == "pretrained" and rows[0].extra["n_generated"] == 13
    # two splits of 6-7 images: far from the trivial 1.0 of one-image splits
    two = torch_fidelity.calculate_metrics(input1=str(folder), isc=True, isc_splits=2, cuda=False,
                                           feature_extractor_weights_path=str(weights), verbose=False,
                                           cache=False, save_cpu_ram=True)["inception_score_mean"]
    _, logits = FEATURE_CACHE.features(sorted(folder.iterdir()), *_extractor())
    assert inception_score(logits, splits=2)[0] == pytest.approx(two, abs=1e-4)
    assert two > 1.02


def _extractor():
    model, resolution = IsPlugin(weights="pretrained").extractor()
    return model, weights_key(resolution)


def test_is_object_and_functional_agree_with_the_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 7, generator=g) * 3
    mean, _ = inception_score(logits, splits=4, shuffle=False)
    p = logits.double().softmax(1)
    scores = []
    for chunk in p.split(5):
        kl = (chunk * (chunk.log() - chunk.mean(0, keepdim=True).log())).sum(1).mean()
        scores.append(math.exp(float(kl)))
    assert mean == pytest.approx(float(np.mean(scores)), abs=1e-12)

    class Logits(torch.nn.Module):  # an extractor stand-in returning (pool, logits)
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 7, generator=g))

        def forward(self, x):
            pooled = x.float().mean((2, 3))
            return pooled, pooled @ self.w

    images = torch.randint(0, 256, (12, 3, 8, 8), generator=g, dtype=torch.uint8)
    metric = InceptionScore(Logits(), splits=10)
    for batch in images.split(5):
        metric.update(batch)
    assert metric.compute()[0] == pytest.approx(inception_score(Logits.forward(metric.model, images)[1], 10)[0])


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(tmp_path, pretrained_home):
    real = _write_images(tmp_path / "real", 10, seed=1)
    slight = _write_images(tmp_path / "slight", 10, seed=1, noise=10)
    strong = _write_images(tmp_path / "strong", 10, seed=1, noise=60)
    fid = Fid(weights="pretrained")
    self_fid = fid.score_sets(folder_sets(real), folder_sets(real))[0].value
    slight_fid = fid.score_sets(folder_sets(slight), folder_sets(real))[0].value
    strong_fid = fid.score_sets(folder_sets(strong), folder_sets(real))[0].value
    assert abs(self_fid) < 1e-3 * strong_fid
    assert self_fid < slight_fid < strong_fid


def test_fid_equals_torch_fidelity_fid(tmp_path, inception_file, pretrained_home):
    """The same weights file, the same two folders: acbench's FID is torch-fidelity's."""
    _, weights = inception_file
    real = _write_images(tmp_path / "real", 12, seed=4)
    gen = _write_images(tmp_path / "gen", 11, seed=5, noise=30)
    ours = Fid(weights="pretrained").score_sets(folder_sets(gen), folder_sets(real))[0].value
    want = torch_fidelity.calculate_metrics(input1=str(gen), input2=str(real), fid=True, cuda=False,
                                            feature_extractor_weights_path=str(weights), verbose=False,
                                            cache=False, save_cpu_ram=True)["frechet_inception_distance"]
    assert want > 1.0
    assert ours == pytest.approx(want, rel=1e-3)


def test_kid_equals_torch_fidelity_kid_when_every_subset_is_the_whole_set(tmp_path, inception_file,
                                                                           pretrained_home):
    """Equal set sizes make every subset the whole set, so both libraries' random subsets agree."""
    _, weights = inception_file
    real = _write_images(tmp_path / "real", 8, seed=6)
    gen = _write_images(tmp_path / "gen", 8, seed=7, noise=40)
    ours = Kid(weights="pretrained").score_sets(folder_sets(gen), folder_sets(real))[0].value
    want = torch_fidelity.calculate_metrics(input1=str(gen), input2=str(real), kid=True, kid_subset_size=8,
                                            kid_subsets=3, cuda=False, feature_extractor_weights_path=str(weights),
                                            verbose=False, cache=False, save_cpu_ram=True)
    mean, std = want["kernel_inception_distance_mean"], want["kernel_inception_distance_std"]
    assert mean > 0 and std < 1e-4 * mean, (mean, std)  # only summation order differs between subsets
    assert ours == pytest.approx(mean, rel=1e-3)


def test_kid_adapts_the_subset_size_and_is_reproducible(tmp_path, pretrained_home):
    real = _write_images(tmp_path / "real", 6, seed=2)
    gen = _write_images(tmp_path / "gen", 4, seed=3, noise=80)
    rows = Kid(weights="pretrained").score_sets(folder_sets(gen), folder_sets(real))
    assert kid_subset_size(4, 6) == 4
    assert rows[0].extra["n_generated"] == 4 and rows[0].extra["n_reference"] == 6
    assert math.isfinite(rows[0].value)
    assert rows[0].value == Kid(weights="pretrained").score_sets(folder_sets(gen), folder_sets(real))[0].value


def test_kid_matches_a_direct_unbiased_mmd():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g) + 1
    mean, std = kernel_inception_distance(x, y, subset_size=5, subsets=3)
    def k(a, b):
        return (a @ b.T / a.shape[1] + 1) ** 3
    m = 5
    mmd = ((k(y, y).sum() - k(y, y).trace()) + (k(x, x).sum() - k(x, x).trace())) / (m * (m - 1)) \
        - 2 * k(y, x).mean()
    assert mean == pytest.approx(float(mmd), rel=1e-6)  # full subsets: every draw is the whole set
    assert std == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-4)


def test_random_policy_flags_rows_and_features_are_cached(tmp_path):
    gen = _write_images(tmp_path / "gen", 3, seed=4)
    rows = IsPlugin(weights="random").score_sets(folder_sets(gen), {})
    assert {r.extra["weights"] for r in rows} == {"random"}
    cached = len(FEATURE_CACHE._store)
    IsPlugin(weights="random").score_sets(folder_sets(gen), {})
    assert len(FEATURE_CACHE._store) == cached  # the second pass computed nothing new
    assert [b.shape[0] for b in uint8_batches(sorted(gen.iterdir()), 2)] == [2, 1]
