"""Speed options of the shared diffusion pieces: compiled networks, padded last batch, prompts encoded once.
Each must leave the images as the eager, unpadded, per-batch-encoded path makes them (same seeds).

Tolerances: images are uint8, so a float difference can flip a rounding; at most 1 level (of 255) is
allowed where the arithmetic changes (compiled kernels, a larger batch), 0 where it does not.
Measured here once with inductor, the GPU default (2-core CPU, tiny networks, 64 px, 4 steps): compile
265 s, max abs difference to eager 1 level. The inductor test is opt-in (ACBENCH_SLOW_TESTS=1) for that
reason; the default test compiles with `aot_eager` (Dynamo capture with fullgraph=True, so a graph break
fails it, and AOT autograd, without generating kernels).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from acbench_methods.diffusion import build_inpaint_components, sample_inpaint
from acbench_methods.diffusion.speed import (
    FastSampler,
    PromptEmbeddings,
    SpeedOptions,
    compile_components,
    compile_enabled,
    compile_networks,
    is_compiled,
    pad_embeds,
)

torch.set_num_threads(1)
N = 3


def inputs():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(N)]
    masks = [np.zeros((64, 64), bool) for _ in range(N)]
    for i, m in enumerate(masks):
        m[10 + 4 * i : 40, 12:44] = True
    return images, masks, ["a crack", "a scratch", "a crack"], [11, 12, 13]


def generate(components, **speed):
    images, masks, prompts, seeds = inputs()
    return sample_inpaint(components.pipeline(), images, masks, prompts, seeds, 4, 0.7, 7.0, "blurry", **speed)


def max_diff(a, b) -> int:
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def eager():
    components = build_inpaint_components("tiny", "random", seed=0).freeze()
    return components, generate(components)


def test_prompts_encoded_once_give_the_same_images(eager):
    components, reference = eager
    embeddings = PromptEmbeddings()
    assert max_diff(generate(components, embeddings=embeddings), reference) == 0
    assert len(embeddings.cache) == 2  # two distinct prompts, one negative prompt: two encodings
    assert max_diff(generate(components, embeddings=embeddings), reference) == 0  # from the cache


def test_padded_last_batch_keeps_the_real_images(eager):
    components, reference = eager
    padded = generate(components, pad_to=8)
    assert len(padded) == N and max_diff(padded, reference) <= 1  # batch of 8 instead of 3: kernels may differ


def test_padding_ip_adapter_embeddings_keeps_the_halves_apart():
    uncond, cond = torch.zeros(2, 1, 4), torch.stack([torch.ones(1, 4), 2 * torch.ones(1, 4)])
    (padded,) = pad_embeds([torch.cat([uncond, cond])], 2, 4)
    assert padded.shape == (8, 1, 4)
    assert padded[:4].eq(0).all() and padded[4:, 0, 0].tolist() == [1, 2, 2, 2]
    (plain,) = pad_embeds([cond], 2, 3)
    assert plain[:, 0, 0].tolist() == [1, 2, 2]


def test_compile_is_off_on_cpu_by_default_and_can_be_forced():
    assert compile_enabled("auto", "cuda") and compile_enabled("auto", "cuda:1")
    assert not compile_enabled("auto", "cpu") and not compile_enabled("off", "cuda")
    assert compile_enabled("on", "cpu")


def test_an_eager_job_uncompiles_networks_an_earlier_job_compiled():
    """Networks cached in a worker process outlive a job: a `compile: off` job after a compiled one must
    run (and record) the eager forward."""
    class Unet(torch.nn.Conv2d):
        device = torch.device("cpu")  # as a diffusers model has it

    unet = Unet(1, 1, 1)
    vae = torch.nn.Module()
    vae.encoder, vae.decoder = torch.nn.Conv2d(1, 1, 1), torch.nn.Conv2d(1, 1, 1)
    compile_networks(unet, vae, "cpu", backend="aot_eager")
    assert is_compiled(unet) and is_compiled(vae.decoder)
    sampler = FastSampler(SpeedOptions(compile="off"), batch_size=2)
    assert sampler.run(unet, vae, 1, lambda pad_to: (pad_to, is_compiled(unet), is_compiled(vae.encoder))) \
        == (None, False, False)
    assert sampler.facts()["unet_compiled"] is False


def _compiled_matches_eager(eager, backend: str) -> None:
    _, reference = eager
    components = build_inpaint_components("tiny", "random", seed=0).freeze()  # same seed: same weights
    compile_components(components, "cpu", backend=backend)
    assert components.provenance["compiled"].startswith(backend)
    out = generate(components, pad_to=N)
    assert max_diff(out, reference) <= 1
    torch._dynamo.reset()


def test_compiled_networks_match_eager_with_dynamo_capture(eager):
    _compiled_matches_eager(eager, "aot_eager")


@pytest.mark.skipif(not os.environ.get("ACBENCH_SLOW_TESTS"), reason="inductor compile takes minutes on a CPU")
def test_compiled_networks_match_eager_with_inductor(eager):
    _compiled_matches_eager(eager, "inductor")
