"""AnomalyControl end to end on tiny random networks: training, inference, ablations, the plugin."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import numpy as np
import pytest
import torch

from acbench import registry
from acbench.data.demo import materialise_demo
from acbench.data.mvtec import load_category
from acbench.errors import UserError
from acbench.protocol import SplitConfig
from acbench.synthesis import GenerationRequest, SyntheticSet, write_synthetic_set
from acbench_methods.anomalycontrol.cache import Reference
from acbench_methods.anomalycontrol.model import AnomalyControlModel
from acbench_methods.anomalycontrol.options import AnomalyControlOptions
from acbench_methods.anomalycontrol.train import (
    DenoiserWithAdapter,
    denoising_loss,
    draw_batch,
    prepare_training_set,
    train_adapter,
)

torch.set_num_threads(1)
SIZE = 64


def _options(tmp_path, **kw):
    return AnomalyControlOptions(model="tiny", schedule="tiny", cache_dir=tmp_path / "cache", **kw)


def _targets(n=3, seed=0):
    rng = np.random.default_rng(seed)
    normals = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]
    masks = []
    for i in range(n):
        m = np.zeros((SIZE, SIZE), bool)
        m[8 + 6 * i : 36 + 6 * i, 12:44] = True
        masks.append(m)
    return normals, masks


def _references(n=2, seed=1):
    normals, masks = _targets(n, seed)
    return [Reference(normals[i], masks[i], f"the brick has a crack {i}") for i in range(n)]


def _generate(model, seeds=(3, 4)):
    normals, masks = _targets(len(seeds))
    features = None if model.adapter is None else model.reference_features(_references(len(seeds)))
    return model.generate(normals, masks, ["the brick has a crack"] * len(seeds), list(seeds), features)


def test_generation_is_seeded_composited_and_independent_of_the_batch(tmp_path):
    model = AnomalyControlModel.build(_options(tmp_path), "random")
    normals, masks = _targets(3)
    features = model.reference_features(_references(3))
    prompts = ["the brick has a crack"] * 3
    batch = model.generate(normals, masks, prompts, [1, 2, 3], features)
    again = model.generate(normals, masks, prompts, [1, 2, 3], features)
    alone = model.generate(normals[2:], masks[2:], prompts[2:], [3], features[2:])
    reseeded = model.generate(normals, masks, prompts, [7, 8, 9], features)
    assert all(np.array_equal(a, b) for a, b in zip(batch, again))
    assert np.abs(alone[0].astype(int) - batch[2]).max() <= 1
    assert not np.array_equal(batch[0], reseeded[0])
    for image, normal, mask in zip(batch, normals, masks):
        assert image.shape == normal.shape and image.dtype == np.uint8
        assert np.array_equal(image[~mask], normal[~mask])  # outside the mask: the input normal image
        assert not np.array_equal(image[mask], normal[mask])  # inside: painted


def test_a_reference_from_another_category_works(tmp_path):
    model = AnomalyControlModel.build(_options(tmp_path), "random")
    normals, masks = _targets(1)
    foreign = Reference(np.full((96, 96, 3), 200, np.uint8), np.eye(96, dtype=bool), "the grass has a burn")
    out = model.generate(normals, masks, ["the brick has a crack"], [0], model.reference_features([foreign]))
    assert out[0].shape == normals[0].shape and np.array_equal(out[0][~masks[0]], normals[0][~masks[0]])


def test_no_asea_features_are_csm_with_zero_asea_steps(tmp_path):
    refs = _references(2)
    model = AnomalyControlModel.build(_options(tmp_path, ablation="no_asea"), "random")
    args = ([r.image for r in refs], [r.caption for r in refs], [r.mask for r in refs])
    expected = model.csm(*args, asea_steps=0).features
    assert torch.allclose(model.reference_features(refs), expected, atol=1e-6)
    full = AnomalyControlModel.build(_options(tmp_path), "random")  # the same networks, ASEA on
    assert torch.allclose(full.reference_features(refs), model.csm(*args, asea_steps=5, asea_lr=0.1).features,
                          atol=1e-6)  # fmt: skip
    assert not torch.allclose(full.reference_features(refs), expected, atol=1e-4)


def test_no_csm_features_are_image_only_qformer_features_with_asea(tmp_path):
    refs = _references(2)
    model = AnomalyControlModel.build(_options(tmp_path, ablation="no_csm"), "random")
    expected = model.csm([r.image for r in refs], None, [r.mask for r in refs], asea_steps=5, asea_lr=0.1)
    assert torch.allclose(model.reference_features(refs), expected.features, atol=1e-6)
    assert len(expected.losses) == 5  # ASEA ran


def test_no_sga_is_plain_sd_inpainting_and_equals_full_at_scale_zero(tmp_path):
    from acbench_methods.diffusion import sample_inpaint
    from acbench_methods.diffusion.speed import PromptEmbeddings

    no_sga = AnomalyControlModel.build(_options(tmp_path, ablation="no_sga", composite="off"), "random")
    assert no_sga.adapter is None and no_sga.csm is None
    normals, masks = _targets(2)
    prompts, seeds = ["the brick has a crack"] * 2, [3, 4]
    images = no_sga.generate(normals, masks, prompts, seeds)
    # prompts encoded once per distinct text, as the model does (encoded as a batch of two, a text rounds
    # differently in the last bit)
    plain = sample_inpaint(
        no_sga.components.pipeline(), normals, masks, prompts, seeds, no_sga.inference_steps, 0.7, 7.0,
        "monochrome, lowres, bad anatomy, worst quality, low quality", embeddings=PromptEmbeddings(),
    )  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(images, plain))
    full = AnomalyControlModel.build(_options(tmp_path, composite="off", scale=0.0), "random")
    at_zero = full.generate(normals, masks, prompts, seeds, full.reference_features(_references(2)))
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(at_zero, images))
    guided = AnomalyControlModel.build(_options(tmp_path, composite="off"), "random")
    at_one = guided.generate(normals, masks, prompts, seeds, guided.reference_features(_references(2)))
    assert not all(np.array_equal(a, b) for a, b in zip(at_one, images))  # lambda 1: the adapter acts


def test_model_and_report_read_one_table_of_what_each_variant_switches_off(tmp_path, monkeypatch):
    import pandas as pd

    from acbench.report.ablation import ablation_grid
    from acbench.report.load import prepare
    from acbench.report.tables import build_tables
    from acbench_methods.anomalycontrol import ablations

    cls = registry.load("methods", "anomalycontrol")
    assert cls.ablations is ablations.VARIANTS
    assert set(AnomalyControlOptions.model_fields["ablation"].annotation.__args__) == set(ablations.VARIANTS)
    rows = [
        {"method": "anomalycontrol", "variant": v, "category": "bottle", "seed": 0, "stage": "detect",
         "detector": "unet-localization", "anomaly_type": "", "metric": "pixel_ap", "scope": "pixel", "value": 0.5}
        for v in ablations.VARIANTS
    ]  # fmt: skip
    methods = [{"name": "anomalycontrol", "variant": v, "options": {"ablation": v, "preset": "official"}}
               for v in ablations.VARIANTS]  # fmt: skip
    grid = ablation_grid(build_tables(prepare(pd.DataFrame(rows))), methods)
    for row in grid.rows:
        assert tuple(c.text == "✓" for c in row[1:4]) == ablations.VARIANTS[row[0].text].modules
    assert "official" in grid.title and any("no_csm" in n and "reading" in n for n in grid.notes)
    # the model follows the same table: flip a switch there and the model changes with it
    monkeypatch.setitem(ablations.VARIANTS, "no_asea", ablations.VARIANTS["full"])
    assert AnomalyControlModel.build(_options(tmp_path, ablation="no_asea"), "random").asea_steps == 5


def _training_data(model, n=2):
    refs = _references(n)
    features = model.reference_features(refs)
    return prepare_training_set(
        model.components, [r.image for r in refs], [r.mask for r in refs], [r.caption for r in refs], features
    )


def _train(model, data, checkpoint_dir, steps, lr=1e-3):
    return train_adapter(
        model.components,
        model.adapter,
        data,
        steps=steps,
        batch_size=2,
        grad_accumulation=1,
        learning_rate=lr,
        seed=0,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=2,
        train_scale=1.0,
    )


def test_a_short_overfit_on_two_images_lowers_the_loss(tmp_path):
    model = AnomalyControlModel.build(_options(tmp_path), "random")
    data = _training_data(model)
    held = [draw_batch(data, model.components, 2, seed=99, micro_step=i, dropout=False) for i in range(4)]
    module = DenoiserWithAdapter(model.components.unet, model.adapter)
    model.adapter.set_scale(1.0)

    def loss():
        with torch.no_grad():
            return float(np.mean([denoising_loss(module, b, "cpu").item() for b in held]))

    before = loss()
    report = _train(model, data, tmp_path / "ckpt", steps=24, lr=2e-3)
    assert len(report.losses) == 24 and all(np.isfinite(report.losses))
    assert loss() < 0.95 * before


def test_training_resumes_from_its_checkpoint_exactly(tmp_path):
    straight = AnomalyControlModel.build(_options(tmp_path), "random")
    data = _training_data(straight)
    _train(straight, data, tmp_path / "a", steps=4)
    resumed = AnomalyControlModel.build(_options(tmp_path), "random")
    _train(resumed, data, tmp_path / "b", steps=2)  # "interrupted" after its step-2 checkpoint
    report = _train(resumed, data, tmp_path / "b", steps=4)
    assert report.resumed_from == 2 and len(report.losses) == 2
    ours, theirs = straight.adapter.state_dict(), resumed.adapter.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert sorted(p.name for p in (tmp_path / "b").glob("step-*")) == ["step-2", "step-4"]


def test_condition_dropout_blanks_features_and_text_at_the_configured_rate(tmp_path):
    model = AnomalyControlModel.build(_options(tmp_path), "random")
    data = _training_data(model)
    no_feature = no_text = 0
    for step in range(400):
        batch = draw_batch(data, model.components, 2, seed=0, micro_step=step)
        no_feature += int((batch["features"].abs().sum(1) == 0).sum())
        no_text += int(sum(torch.equal(t, data.empty_text[0]) for t in batch["text"]))
    assert 0.05 < no_feature / 800 < 0.16 and 0.05 < no_text / 800 < 0.16  # 10 % each in expectation


# ------------------------------------------------------------------------------------------ the plugin


@pytest.fixture(scope="module")
def acbench_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("acbench-cache")


@pytest.fixture(scope="module")
def demo(acbench_cache):
    root = materialise_demo(cache=acbench_cache)  # the folder a demo study finds via ACBENCH_CACHE
    return [
        load_category(root, c, SplitConfig(), dataset="demo", image_size=SIZE) for c in ("brick", "grass")
    ]


def test_plugin_fits_and_generates_through_the_synthesizer_interface(demo, tmp_path):
    cls = registry.load("methods", "anomalycontrol")
    options = {"model": "tiny", "schedule": "tiny", "cache_dir": str(tmp_path / "cache"), "batch_size": 3}
    method = cls(cls.Options.model_validate(options), weights="pretrained")
    assert cls.fit_scope == "dataset" and method.required_weights() == []
    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    method.fit(demo, fit_dir, seed=0)
    info = json.loads((fit_dir / "anomalycontrol.json").read_text())
    n_train = sum(len(x) for c in demo for x in c.synthesis.values())
    assert (
        info["adapters"]["_all"]["images"] == n_train
        and (fit_dir / info["adapters"]["_all"]["file"]).is_file()
    )
    assert info["provenance"]["random_weights"] is True
    assert not list(tmp_path.glob(".anomalycontrol-checkpoints/*"))  # removed once the adapter is saved

    generator = cls(cls.Options.model_validate(options))  # a new process: reads the fit artifact
    brick = demo[0]
    atype = min(brick.synthesis)
    request = GenerationRequest(atype, 4, seed=0, fit_dir=fit_dir)
    samples = list(generator.generate(brick, request))
    assert generator.model().cache.hits > 0  # the references' features came from the fit's cache
    assert len(samples) == 4 and all(s.anomaly_type == atype and s.mask.any() for s in samples)
    for s in samples:
        normal = brick.normal_image(brick.normal_train.index(brick.root / s.source_normal))
        assert np.array_equal(s.image[~s.mask], normal[~s.mask])
    again = list(cls(cls.Options.model_validate(options)).generate(brick, request))
    assert all(
        np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) for a, b in zip(samples, again)
    )
    assert generator.provenance()["random_weights"] is True
    count = write_synthetic_set(tmp_path / "synthetic", samples, brick.category, "anomalycontrol", 0)
    assert count == 4 and len(SyntheticSet(tmp_path / "synthetic")) == 4

    dataset_refs = cls(cls.Options.model_validate({**options, "references": "dataset", "prompt": "template"}))
    assert (
        len(list(dataset_refs.generate(demo[1], GenerationRequest("hole", 2, seed=1, fit_dir=fit_dir)))) == 2
    )


def test_per_category_fit_trains_one_adapter_per_category(demo, tmp_path):
    cls = registry.load("methods", "anomalycontrol")
    options = {
        "model": "tiny",
        "schedule": "tiny",
        "train_steps": 1,
        "per_category": True,
        "cache_dir": str(tmp_path),
    }
    method = cls(options)
    method.fit(demo, tmp_path, seed=0)
    adapters = json.loads((tmp_path / "anomalycontrol.json").read_text())["adapters"]
    assert sorted(adapters) == ["brick", "grass"]
    assert {a["images"] for a in adapters.values()} == {sum(len(x) for x in demo[0].synthesis.values())}
    grass = cls(options)
    list(grass.generate(demo[1], GenerationRequest("hole", 1, seed=0, fit_dir=tmp_path)))
    assert grass._loaded_adapter == tmp_path / adapters["grass"]["file"]


def test_plugin_refuses_a_missing_or_mismatched_fit(demo, tmp_path):
    cls = registry.load("methods", "anomalycontrol")
    method = cls({"model": "tiny", "schedule": "tiny", "cache_dir": str(tmp_path)})
    with pytest.raises(UserError, match="fit"):
        next(method.generate(demo[0], GenerationRequest("crack", 1, seed=0, fit_dir=None)))
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "anomalycontrol.json").write_text(
        json.dumps({"model": "tiny", "ablation": "no_csm", "adapters": {}})
    )
    with pytest.raises(UserError, match="no_csm"):
        next(method.generate(demo[0], GenerationRequest("crack", 1, seed=0, fit_dir=tmp_path / "fit")))
    no_sga = cls({"model": "tiny", "schedule": "tiny", "ablation": "no_sga"})
    assert len(list(no_sga.generate(demo[0], GenerationRequest("crack", 2, seed=0)))) == 2  # plain SD: no fit


def test_sd15_preset_declares_its_weights():
    cls = registry.load("methods", "anomalycontrol")
    names = [
        w.name
        for w in cls(
            {"model": "sd15", "ip_adapter_path": "/x/ip-adapter_sd15.safetensors"}
        ).required_weights()
    ]
    assert names == ["stable-diffusion-inpainting", "blip2-itm-vit-g", "ip-adapter-sd15"]
    assert [w.name for w in cls({"model": "sd15", "ablation": "no_sga"}).required_weights()] == [
        "stable-diffusion-inpainting"
    ]


def test_a_study_runs_anomalycontrol_through_the_engine(demo, acbench_cache, tmp_path, monkeypatch):
    from acbench.engine.runner import run_study
    from acbench.protocol import parse_protocol

    monkeypatch.setenv("ACBENCH_CACHE", str(acbench_cache))  # demo data and CSM features
    protocol = parse_protocol(
        {
            "name": "anomalycontrol-demo",
            "dataset": {"kind": "demo", "categories": ["brick"], "image_size": SIZE},
            "methods": [{"name": "anomalycontrol", "options": {"model": "tiny", "schedule": "tiny"}}],
            "generation": {"per_type": 2},
            "metrics": ["pair-stats"],
            "weights": "pretrained-or-random",
            "executor": {"device": "cpu"},
        }
    )
    result = run_study(protocol, out=tmp_path / "run", report=False)
    assert not result.failed
    generated = next((tmp_path / "run" / "artifacts" / "generate").rglob("index.csv")).parent
    assert len(SyntheticSet(generated)) == 2 * 3
    marker = json.loads((generated / "DONE.json").read_text())
    assert marker["provenance"]["random_weights"] is True
    assert set(result.results["generator_weights"]) == {"random"}
    # every row says which preset produced the images, and that the captions are the template's
    assert set(result.results["generator_preset"]) == {"acbench"}
    assert set(result.results["generator_captions"]) == {"template captions — not the paper's"}


def test_mixed_precision_training_and_half_precision_inference(tmp_path):
    """The GPU code path (frozen networks in half precision, adapter trained in fp32 under autocast,
    then used in half precision) run with bfloat16, which CPUs support."""
    model = AnomalyControlModel.build(_options(tmp_path), "random", dtype=torch.bfloat16)
    assert model.components.unet.dtype == torch.bfloat16 and model.csm.model.qformer.dtype == torch.float32
    data = _training_data(model)
    report = train_adapter(
        model.components, model.adapter, data, steps=2, batch_size=2, grad_accumulation=2,
        learning_rate=1e-3, seed=0, checkpoint_dir=tmp_path / "bf16", checkpoint_every=1, mixed_precision="bf16",
    )  # fmt: skip
    assert all(np.isfinite(report.losses))
    assert {p.dtype for p in model.adapter.parameters()} == {torch.bfloat16}
    images = _generate(model)
    assert all(i.dtype == np.uint8 and i.shape == (SIZE, SIZE, 3) for i in images)
    fp32 = AnomalyControlModel.build(_options(tmp_path), "random")  # another precision in the same process
    assert np.isfinite(_train(fp32, _training_data(fp32), tmp_path / "fp32", steps=1).losses).all()


def test_an_adapter_trained_by_the_command_line_is_used_as_the_fit(demo, tmp_path):
    from acbench_methods.anomalycontrol.__main__ import main

    (tmp_path / "options.yaml").write_text(f"model: tiny\nschedule: tiny\ncache_dir: {tmp_path / 'cache'}\n")
    root = demo[0].root
    args = ["--dataset", str(root), "--categories", "brick", "--out", str(tmp_path / "adapter")]
    assert main([*args, "--options", str(tmp_path / "options.yaml")]) == 0
    (tmp_path / "bad.yaml").write_text("model: huge\n")
    assert main([*args, "--options", str(tmp_path / "bad.yaml")]) == 2

    cls = registry.load("methods", "anomalycontrol")
    options = {"model": "tiny", "schedule": "tiny", "pretrained_fit": str(tmp_path / "adapter")}
    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    method = cls(options)
    method.fit(demo[:1], fit_dir, seed=0)
    assert sorted(p.name for p in fit_dir.iterdir()) == sorted(
        p.name for p in (tmp_path / "adapter").iterdir()
    )
    assert method.provenance()["random_weights"] is True
    samples = list(cls(options).generate(demo[0], GenerationRequest("crack", 2, seed=0, fit_dir=fit_dir)))
    assert len(samples) == 2
    with pytest.raises(UserError, match="pretrained_fit"):
        cls({**options, "ablation": "no_asea"}).fit(demo[:1], tmp_path / "fit", seed=0)
