"""Generation speed options in the plugins (`compile`, padded batches, prompts encoded once): the images must
stay what the eager path makes with the same seed.

Compiling tests use the `aot_eager` backend: Dynamo captures each network whole (fullgraph=True, so a graph
break, e.g. in AnomalyControl's IP-Adapter attention processors, fails the test) and AOT autograd runs it,
without generating kernels. Inductor on this 2-core CPU takes minutes per compile (tests/test_diffusion_speed.py
runs it opt-in, max abs difference 1 level). Tolerance here: at most 1 level of 255 on uint8 images (a float
difference may flip a rounding); measured: 0 with aot_eager (DualAnoDiff: 1). `error_on_recompile` makes a
second compile (a new batch shape, a changed processor) fail the test, so the padded last batch is checked to
keep the shape. DualAnoDiff's compiled run is a third compile and opt-in (ACBENCH_SLOW_TESTS=1), as is
AnomalyControl with inductor, measured once on this CPU: compile 184 s, max abs difference 1 level (one
channel value of 36,864 differs), no recompile for the padded batch.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
import yaml

from acbench import registry
from acbench.errors import UserError
from acbench.protocol import load_protocol, parse_protocol
from acbench.synthesis import GenerationRequest
from acbench_methods.anomalycontrol.cache import Reference
from acbench_methods.anomalycontrol.model import AnomalyControlModel
from acbench_methods.anomalycontrol.options import AnomalyControlOptions
from acbench_methods.diffusion import speed

SIZE = 64
COMPILED = {"compile": "on", "compile_backend": "aot_eager"}


def max_diff(a, b) -> int:
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))


def sd_inpaint(**options):
    return registry.load("methods", "sd-inpaint")({"preset": "tiny", "batch_size": 2, **options})


def anomalycontrol(tmp_path, **options):
    cls = registry.load("methods", "anomalycontrol")
    return cls({"model": "tiny", "schedule": "tiny", "cache_dir": str(tmp_path / "cache"), "batch_size": 2,
                "ablation": "no_sga", "prompt": "template", **options})


def count_calls(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.fixture(scope="module")
def eager_sd_inpaint(brick):
    method = sd_inpaint()
    samples = list(method.generate(brick, GenerationRequest("crack", 3, seed=0)))
    return method, samples


def test_auto_does_not_compile_on_the_cpu(eager_sd_inpaint):
    method, samples = eager_sd_inpaint
    assert len(samples) == 3
    unet = method.painter().pipe.unet
    assert unet._compiled_call_impl is None  # what `nn.Module.compile` sets
    assert method.provenance()["generation_speed"] == {"compile": "auto", "unet_compiled": False}


def test_sd_inpaint_compiled_with_a_padded_last_batch_matches_eager(brick, eager_sd_inpaint, monkeypatch):
    _, reference = eager_sd_inpaint
    batches = []
    original = speed.sample_inpaint
    monkeypatch.setattr(speed, "sample_inpaint", lambda pipe, images, *a, pad_to=None, **k: (
        batches.append((len(images), pad_to)) or original(pipe, images, *a, pad_to=pad_to, **k)))
    method = sd_inpaint(**COMPILED)
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):  # 3 images in batches of 2: one shape
            samples = list(method.generate(brick, GenerationRequest("crack", 3, seed=0)))
            assert len(list(method.generate(brick, GenerationRequest("hole", 2, seed=0)))) == 2  # no recompile
    finally:
        torch._dynamo.reset()
    assert batches == [(2, 2), (1, 2), (2, 2)]  # the last batch of one image was padded to two
    assert len(samples) == 3
    for a, b in zip(samples, reference, strict=True):
        assert a.source_normal == b.source_normal and np.array_equal(a.mask, b.mask)
    assert max_diff([s.image for s in samples], [s.image for s in reference]) <= 1
    assert method.painter().pipe.unet._compiled_call_impl is not None
    facts = method.provenance()["generation_speed"]
    assert facts == {"compile": "on", "unet_compiled": True, "compiled_with": "aot_eager:default", "padded_batch": 2}


SLOW = pytest.mark.skipif(not os.environ.get("ACBENCH_SLOW_TESTS"), reason="inductor: minutes on a CPU")


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=SLOW)])
def test_anomalycontrol_with_its_adapter_compiled_matches_eager(tmp_path, backend):
    """The SGA adapter's IP-Adapter attention processors captured whole; a padded batch of 1 keeps the shape.
    With inductor (generated kernels; opt-in) the measured max abs difference is stated in the module doc."""
    rng = np.random.default_rng(0)
    normals = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.zeros((SIZE, SIZE), bool) for _ in range(3)]
    for i, m in enumerate(masks):
        m[8 + 6 * i : 36 + 6 * i, 12:44] = True
    refs = [Reference(normals[i], masks[i], f"the brick has a crack {i}") for i in range(3)]
    prompts = ["the brick has a crack", "the brick has a hole", "the brick has a crack"]

    def run(**options):
        opts = AnomalyControlOptions(model="tiny", schedule="tiny", cache_dir=tmp_path / "cache", batch_size=2,
                                     **options)
        model = AnomalyControlModel.build(opts, "random")
        features = model.reference_features(refs)
        images = model.generate(normals[:2], masks[:2], prompts[:2], [1, 2], features[:2])
        images += model.generate(normals[2:], masks[2:], prompts[2:], [3], features[2:])  # padded to 2
        return model, images

    _, eager = run(compile="off")
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            model, compiled = run(compile="on", compile_backend=backend)
    finally:
        torch._dynamo.reset()
    assert model.speed_facts()["unet_compiled"] is True
    assert max_diff(compiled, eager) <= 1


def test_the_text_encoder_runs_once_per_distinct_prompt(brick, tmp_path):
    method = sd_inpaint()
    calls = count_calls(method.painter().pipe.text_encoder)
    assert len(list(method.generate(brick, GenerationRequest("crack", 5, seed=1)))) == 5  # 3 batches
    assert len(calls) == 2  # the prompt and the negative prompt, once; per batch it would be 6
    list(method.generate(brick, GenerationRequest("hole", 2, seed=1)))
    assert len(calls) == 4  # a new prompt: encoded with its negative prompt

    method = anomalycontrol(tmp_path)  # `prompt: template`: one prompt per type
    calls = count_calls(method.model().components.text_encoder)
    assert len(list(method.generate(brick, GenerationRequest("crack", 4, seed=1)))) == 4
    assert len(calls) == 2
    assert method.provenance()["generation_speed"]["unet_compiled"] is False


def test_a_failing_compile_warns_once_and_gives_the_eager_images(brick, eager_sd_inpaint, monkeypatch, caplog):
    """torch.compile fails lazily, at the first call (a graph break under fullgraph, a backend error): this
    stands in for it by installing, where `nn.Module.compile` keeps the compiled forward, one that raises."""
    _, reference = eager_sd_inpaint
    attempts = []

    def failing_compile(unet, vae, *args, **kwargs):
        def raises(*a, **k):
            attempts.append(1)
            raise torch._dynamo.exc.TorchRuntimeError("graph break in a custom attention processor")

        unet._compiled_call_impl = raises

    monkeypatch.setattr(speed, "compile_networks", failing_compile)
    method = sd_inpaint(compile="on")
    with caplog.at_level(logging.WARNING, logger=speed.__name__):
        samples = list(method.generate(brick, GenerationRequest("crack", 3, seed=0)))  # two batches
    warnings = [r for r in caplog.records if r.name == speed.__name__]
    assert attempts == [1] and len(warnings) == 1 and "custom attention processor" in warnings[0].getMessage()
    assert max_diff([s.image for s in samples], [s.image for s in reference]) == 0  # eager: the same images
    assert method.painter().pipe.unet._compiled_call_impl is None
    facts = method.provenance()["generation_speed"]
    assert facts["unet_compiled"] is False and "custom attention processor" in facts["compile_error"]


@pytest.mark.parametrize("method", ["sd-inpaint", "anomalycontrol", "dualanodiff"])
@pytest.mark.parametrize("field, value", [("compile", "yes"), ("compile_mode", "fast"), ("compile_backend", "tvm")])
def test_a_bad_speed_option_is_named_at_protocol_load(method, field, value):
    protocol = {"name": "t", "dataset": {"kind": "demo"},
                "methods": [{"name": method, "options": {"preset" if method == "sd-inpaint" else "model": "tiny",
                                                         field: value}}]}
    with pytest.raises(UserError, match=rf"methods\[0\]\.options\.{field}: "):
        parse_protocol(protocol)


# ------------------------------------------------------------------------------- DualAnoDiff's own loop
@pytest.fixture(scope="module")
def dualanodiff_fit(brick, tmp_path_factory):
    cls = registry.load("methods", "dualanodiff")
    fit_dir = tmp_path_factory.mktemp("dualanodiff-fit")
    options = {"model": "tiny", "schedule": "tiny", "train_steps": 2, "generation_batch": 2}
    cls(options).fit([brick], fit_dir, seed=0)
    return cls, options, fit_dir, sorted(t for t, ex in brick.synthesis.items() if ex)


def test_dualanodiff_padded_batch_keeps_the_real_images(brick, dualanodiff_fit):
    cls, options, fit_dir, types = dualanodiff_fit
    method = cls(options)
    components, adapter = method._load(brick, GenerationRequest(types[0], 2, seed=0, fit_dir=fit_dir))
    plain = method._paint(components, adapter, [5, 6], None, None)
    padded = method._paint(components, adapter, [5, 6], None, 4)  # two copies of the last image, dropped
    assert [len(p) for p in padded] == [2, 2]
    for a, b in zip(plain, padded, strict=True):
        assert max_diff(a, b) <= 1  # a batch of 4 instead of 2: kernels may round differently


@pytest.mark.skipif(not os.environ.get("ACBENCH_SLOW_TESTS"), reason="a third compile: ~45 s on a 2-core CPU")
def test_dualanodiff_compiled_matches_eager_for_two_types(brick, dualanodiff_fit):
    """Its cross-branch attention captured whole; a second type's new adapter reuses the compiled graphs.
    Measured: max abs difference 1 level (aot_eager), no recompile."""
    cls, options, fit_dir, types = dualanodiff_fit

    def run(**speed):
        method = cls({**options, **speed})
        out = list(method.generate(brick, GenerationRequest(types[0], 3, seed=0, fit_dir=fit_dir)))
        out += list(method.generate(brick, GenerationRequest(types[1], 2, seed=0, fit_dir=fit_dir)))
        return method, [s.image for s in out]

    _, eager = run(compile="off")
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            method, compiled = run(**COMPILED)
    finally:
        torch._dynamo.reset()
    assert method.provenance()["generation_speed"]["unet_compiled"] is True
    assert max_diff(compiled, eager) <= 1


def test_unquoted_on_and_off_in_a_yaml_protocol_mean_on_and_off(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: t\ndataset: {kind: demo}\nmethods:\n"
                    "  - {name: sd-inpaint, options: {preset: tiny, compile: off}}\n"
                    "  - {name: anomalycontrol, options: {model: tiny, compile: on}}\n")
    raw = yaml.safe_load(path.read_text())
    assert [m["options"]["compile"] for m in raw["methods"]] == [False, True]  # what PyYAML makes of them
    assert [m.options["compile"] for m in load_protocol(path).methods] == ["off", "on"]


@pytest.mark.parametrize("method", ["sd-inpaint", "anomalycontrol", "dualanodiff"])
def test_speed_options_at_their_defaults_leave_the_job_hash_unchanged(method):
    """The protocol keeps (and hashes) the options' dump: defaults are left out, so studies written before
    the options existed resume; a set option is kept and round-trips."""
    cls = registry.load("methods", method)
    dump = cls.Options.model_validate({}).model_dump(mode="json")
    assert not {"compile", "compile_mode", "compile_backend"} & set(dump)
    assert cls.Options.model_validate({"compile": "auto", "compile_mode": "default"}).model_dump(mode="json") == dump
    chosen = cls.Options.model_validate({"compile": "off", "compile_mode": "max-autotune"}).model_dump(mode="json")
    assert (chosen["compile"], chosen["compile_mode"]) == ("off", "max-autotune")
    assert cls.Options.model_validate(chosen).compile == "off"
