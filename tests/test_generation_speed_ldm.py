"""Generation speed options in AnomalyDiffusion and AnoGen: padded at the network calls, not at the noise draw.

Their sampler draws each batch's noise for its n real rows from one CPU generator; with `pad_to` only what the
UNet and the VAE receive is padded (copies of the last row) and their outputs are cut back to n. Without
`pad_to` the sampler is the plain one (measured against the sampler before padding existed: bit-identical for
plain, AAR x0_pred and AAR latent/shift sampling and the mask model's images).

The compiled test uses the `aot_eager` backend (Dynamo captures each network whole, fullgraph=True, AAR's
attention processors included) with recompiles made an error, so a short last batch must keep the one
compiled shape and, with AAR on, the unconditional branch and the first step (no AAR weights in eager) must
not be a second graph. Tolerance: 1 level of 255 (a float difference may flip a rounding); measured 0.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from engine_helpers import run_cli

from acbench import registry
from acbench.engine.plan import plan
from acbench.errors import UserError
from acbench.protocol import parse_protocol
from acbench.synthesis import GenerationRequest
from acbench_methods.anomalydiffusion.base import tiny_base
from acbench_methods.anomalydiffusion.sampling import AARConfig, inpaint
from acbench_methods.diffusion import speed

METHODS = ["anomalydiffusion", "anogen"]
COMPILED = {"compile": "on", "compile_backend": "aot_eager"}
SPEED_FIELDS = {"compile", "compile_mode", "compile_backend"}


def max_diff(a, b) -> int:
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))


def unet_batches(unet: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    sizes: list[int] = []
    return sizes, unet.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))


@pytest.mark.parametrize("aar", [AARConfig(enabled=False), AARConfig(enabled=True, reference="latent", mode="shift")])
def test_padding_at_the_network_calls_keeps_the_real_rows_and_their_noise(aar):
    base = tiny_base()
    r = base.resolution
    torch.manual_seed(0)
    vectors, normals = torch.randn(3, 4, base.hidden_size), torch.rand(3, 3, r, r) * 2 - 1
    masks = torch.zeros(3, 1, r, r)
    masks[:, :, r // 4 : r // 2, r // 4 : 3 * r // 4] = 1

    def run(pad_to):
        generator = torch.Generator().manual_seed(1)
        sizes, handle = unet_batches(base.unet)
        out = inpaint(base, vectors, normals, masks, 3, 0.5, 5.0, aar, generator, pad_to=pad_to)
        handle.remove()
        return out, sizes, generator.get_state()

    plain, plain_sizes, plain_state = run(None)
    same, _, _ = run(3)  # padding to the batch's own size: nothing added
    padded, padded_sizes, padded_state = run(5)
    assert plain_sizes == [3] * 6 and padded_sizes == [5] * 6  # 3 steps x (unconditional, conditional)
    assert torch.equal(plain_state, padded_state)  # the same noise draws, for the 3 real rows only
    assert padded.shape == plain.shape  # the 2 copies never reach the output
    # with AAR, padded calls get weights of ones where eager has none (the first step, the unconditional
    # branch): the same attention, computed without SDPA; without AAR nothing changes
    assert torch.equal(same, plain) or aar.enabled
    # a batch of 5 instead of 3 may round differently: measured at most 0.002 levels of 255
    for out in (same, padded):
        assert float((out - plain).abs().max()) * 127.5 < 0.05


# ------------------------------------------------------------------------------- the plugins

AD = {"model": "tiny", "schedule": "tiny", "train_mask_model": False, "mask_source": {"name": "real-augmented"},
      "adaptive_attention": "on", "generation_batch": 2}


@pytest.fixture(scope="module")
def ad_fit(brick, tmp_path_factory):
    fit_dir = tmp_path_factory.mktemp("ad-speed-fit")
    registry.load("methods", "anomalydiffusion")(AD, weights="random").fit([brick], fit_dir, seed=0)
    return fit_dir


def generate(name, options, data, fit_dir, requests):
    method = registry.load("methods", name)(options, weights="random")
    out = [s for atype, n in requests
           for s in method.generate(data, GenerationRequest(atype, n, seed=0, fit_dir=fit_dir))]
    return method, out


def test_anomalydiffusion_compiled_with_aar_and_a_padded_last_batch_matches_eager(brick, ad_fit):
    types = sorted(t for t, ex in brick.synthesis.items() if ex)
    requests = [(types[0], 3), (types[1], 1)]  # batches of 2, 1 and 1: each short one padded to 2
    plain, eager = generate("anomalydiffusion", {**AD, "compile": "off"}, brick, ad_fit, requests)
    base = plain._fitted.base  # cached: the same networks for every instance in this process
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):  # one UNet graph, AAR weights at every call
            method, compiled = generate("anomalydiffusion", {**AD, **COMPILED}, brick, ad_fit, requests)
    finally:
        speed.uncompile_networks(base.unet, base.vae)  # leave the shared base eager
        torch._dynamo.reset()
    assert len(compiled) == len(eager) == 4
    for a, b in zip(compiled, eager, strict=True):
        assert a.source_normal == b.source_normal and np.array_equal(a.mask, b.mask)
    assert max_diff([s.image for s in compiled], [s.image for s in eager]) <= 1
    facts = method.provenance()["generation_speed"]
    assert facts == {"compile": "on", "unet_compiled": True, "compiled_with": "aot_eager:default", "padded_batch": 2}


@pytest.fixture(scope="module")
def anogen_fit(brick, tmp_path_factory):
    fit_dir = tmp_path_factory.mktemp("anogen-speed-fit")
    options = {"model": "tiny", "schedule": "tiny", "train_steps": 1, "generation_batch": 2}
    registry.load("methods", "anogen")(options, weights="random").fit([brick], fit_dir, seed=0)
    return options, fit_dir


def test_anogen_padded_batches_keep_the_real_images(brick, anogen_fit, monkeypatch):
    """Compiled, every batch goes through `paint(pad_to=2)`; eager ones (here) with pad_to None. Forcing the
    padded path eagerly checks the plugin's padding apart from the compiler."""
    options, fit_dir = anogen_fit
    atype = sorted(brick.synthesis)[0]
    _, plain = generate("anogen", options, brick, fit_dir, [(atype, 3)])
    monkeypatch.setattr(speed, "compile_enabled", lambda *_: True)
    monkeypatch.setattr(speed, "compile_networks", lambda *a, **k: None)  # the padded path, networks eager
    method = registry.load("methods", "anogen")(options, weights="random")
    sizes, handle = unet_batches(method._load(fit_dir, "cpu").base.unet)
    try:
        padded = list(method.generate(brick, GenerationRequest(atype, 3, seed=0, fit_dir=fit_dir)))
    finally:
        handle.remove()
    assert set(sizes) == {2}  # the last batch of one image reached the UNet as two
    assert len(padded) == 3
    assert max_diff([s.image for s in padded], [s.image for s in plain]) <= 1
    assert method.provenance()["generation_speed"]["padded_batch"] == 2


def test_a_failing_compile_gives_the_eager_images_from_the_same_noise(brick, anogen_fit, monkeypatch, caplog):
    """The eager retry of a failed first compiled batch rewinds the generator: the images are the eager ones,
    to the bit (the failed attempt would otherwise have used up the noise)."""
    options, fit_dir = anogen_fit
    atype = sorted(brick.synthesis)[0]
    _, eager = generate("anogen", options, brick, fit_dir, [(atype, 3)])

    def failing_compile(unet, vae, *args, **kwargs):
        def raises(*a, **k):
            raise torch._dynamo.exc.TorchRuntimeError("graph break in an attention processor")

        unet._compiled_call_impl = raises

    monkeypatch.setattr(speed, "compile_networks", failing_compile)
    with caplog.at_level(logging.WARNING, logger=speed.__name__):
        method, images = generate("anogen", {**options, "compile": "on"}, brick, fit_dir, [(atype, 3)])
    assert [r.name for r in caplog.records].count(speed.__name__) == 1
    assert all(np.array_equal(a.image, b.image) for a, b in zip(images, eager, strict=True))
    assert method._fitted.base.unet._compiled_call_impl is None
    facts = method.provenance()["generation_speed"]
    assert facts["unet_compiled"] is False and "attention processor" in facts["compile_error"]


# ------------------------------------------------------------------------------- options

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("field, value", [("compile", "yes"), ("compile_mode", "fast"), ("compile_backend", "tvm")])
def test_a_bad_speed_option_is_named_at_protocol_load(method, field, value):
    protocol = {"name": "t", "dataset": {"kind": "demo"},
                "methods": [{"name": method, "options": {"model": "tiny", field: value}}]}
    with pytest.raises(UserError, match=rf"methods\[0\]\.options\.{field}: "):
        parse_protocol(protocol)


def test_a_bad_speed_option_exits_2_before_any_job(tmp_path, monkeypatch, capsys):
    path = tmp_path / "p.yaml"
    path.write_text("name: t\ndataset: {kind: demo}\nmethods:\n  - {name: anogen, options: {compile: maybe}}\n")
    assert run_cli(monkeypatch, "run", path, "--out", tmp_path / "out") == 2
    assert "options.compile" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", METHODS)
def test_speed_options_at_their_defaults_leave_the_job_hashes_unchanged(method):
    cls = registry.load("methods", method)
    dump = cls.Options.model_validate({"model": "tiny"}).model_dump(mode="json")
    assert not SPEED_FIELDS & set(dump)  # what the protocol keeps and hashes

    def hashes(**options):
        protocol = parse_protocol({"name": "t", "dataset": {"kind": "demo"},
                                   "methods": [{"name": method, "options": {"model": "tiny", **options}}]})
        return [job.hash for job in plan(protocol, ["brick"])]

    before = hashes()  # an options dump without the speed fields, as written before they existed
    assert hashes(compile="auto", compile_mode="default", compile_backend="inductor") == before
    assert hashes(compile="off") != before  # a set option is part of the hash


@pytest.mark.skipif(not os.environ.get("ACBENCH_SLOW_TESTS"), reason="a second compile: ~30 s on a 2-core CPU")
def test_anogen_compiled_matches_eager(brick, anogen_fit):
    options, fit_dir = anogen_fit
    atype = sorted(brick.synthesis)[0]
    plain, eager = generate("anogen", options, brick, fit_dir, [(atype, 3)])
    base = plain._fitted.base
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            method, compiled = generate("anogen", {**options, **COMPILED}, brick, fit_dir, [(atype, 3)])
    finally:
        speed.uncompile_networks(base.unet, base.vae)
        torch._dynamo.reset()
    assert method.provenance()["generation_speed"]["unet_compiled"] is True
    assert max_diff([s.image for s in compiled], [s.image for s in eager]) <= 1


@pytest.mark.skipif(not os.environ.get("ACBENCH_SLOW_TESTS"), reason="compiles five graphs: ~40 s on a 2-core CPU")
def test_anomalydiffusion_compiled_with_its_own_mask_model(brick, tmp_path):
    """The default mask source samples with the method's compiled UNet and decoder at its own batch size:
    one more graph of each (UNet and decoder at 2 and 8, the encoder at 2), whatever the layout of its inputs."""
    from torch._dynamo.utils import counters

    options = {"model": "tiny", "schedule": "tiny", "generation_batch": 2}
    registry.load("methods", "anomalydiffusion")(options, weights="random").fit([brick], tmp_path, seed=0)
    types = sorted(t for t, ex in brick.synthesis.items() if ex)[:2]
    plain, eager = generate("anomalydiffusion", options, brick, tmp_path, [(t, 3) for t in types])
    base = plain._fitted.base
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]  # (a count over the process: reset keeps it)
    try:
        method, compiled = generate("anomalydiffusion", {**options, **COMPILED}, brick, tmp_path,
                                    [(t, 3) for t in types])
        graphs = counters["stats"]["unique_graphs"] - before
    finally:
        speed.uncompile_networks(base.unet, base.vae)
        torch._dynamo.reset()
    assert method.provenance()["generation_speed"]["unet_compiled"] is True
    assert method.provenance()["mask_source_anomalydiffusion"]["generated"] > 0
    assert graphs == 5
    assert max_diff([s.image for s in compiled], [s.image for s in eager]) <= 1
