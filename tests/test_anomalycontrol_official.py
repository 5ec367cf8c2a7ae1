"""AnomalyControl's `official` preset against the released pipeline, captions in the MVTec-Caption format,
the IP-Adapter SD-1.5 key layout, and the resume key of an interrupted fit (tiny random networks)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from safetensors.torch import save_file

from acbench import registry
from acbench.data.demo import materialise_demo
from acbench.data.mvtec import load_category
from acbench.errors import UserError
from acbench.protocol import SplitConfig
from acbench.synthesis import GenerationRequest
from acbench_methods.anomalycontrol import csm as csm_module
from acbench_methods.anomalycontrol import plugin as plugin_module
from acbench_methods.anomalycontrol.csm import CrossModalSemantics, clean_caption
from acbench_methods.anomalycontrol.model import AnomalyControlModel
from acbench_methods.anomalycontrol.options import RELEASED_MASKS_ENV, AnomalyControlOptions
from acbench_methods.anomalycontrol.presets import SCHEDULES
from acbench_methods.anomalycontrol.references import TEMPLATE_MARK, load_captions, target_mask_spec
from acbench_methods.anomalycontrol.sga import SemanticGuidedAdapter
from acbench_methods.anomalycontrol.train import draw_batch, prepare_training_set
from acbench_methods.diffusion import speed as speed_module

torch.set_num_threads(1)
SIZE = 64


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return materialise_demo(cache=tmp_path_factory.mktemp("demo"))


def _brick(root, split=None):
    return load_category(root, "brick", split or SplitConfig(), dataset="demo", image_size=SIZE)


def _official(**kw):
    return AnomalyControlOptions(preset="official", **kw).resolved()


# ------------------------------------------------------------------ the parity table, one row each


def test_row_captions_are_mvtec_caption_from_the_dataset_root():
    assert _official().captions == "dataset"


def test_row_target_masks_are_anomalydiffusions_generated_masks(monkeypatch, tmp_path):
    monkeypatch.setenv(RELEASED_MASKS_ENV, str(tmp_path))
    spec = target_mask_spec(_official())
    assert (spec.name, spec.options) == ("folder", {"path": str(tmp_path)})


def test_row_lambda_in_training_is_1():
    assert _official().train_scale == 1.0


def test_row_lambda_at_inference_is_1():
    assert _official().scale == 1.0


def test_row_sga_starts_from_ip_adapter_sd15():
    cls = registry.load("methods", "anomalycontrol")
    needed = {w.name: w for w in cls({"preset": "official"}).required_weights()}
    assert _official().sga_init == "ip-adapter" and needed["ip-adapter-sd15"].repo_id == "h94/IP-Adapter"


def test_row_compositing_is_the_sigma_5_blurred_mask():
    opts = _official()
    assert (opts.composite, opts.blur_sigma) == ("blurred", 5.0)


def test_row_compositing_happens_at_512():
    assert _official().composite_at == "model"


def test_row_sampling_seed_is_42_for_every_image():
    assert _official().sampling_seed == 42


def test_row_caption_cleaning_is_lavis_pre_caption_without_token_limit():
    assert _official().caption_cleaning == "lavis"


def test_row_csm_runs_in_fp32():
    assert _official().csm_precision == "fp32"


def test_row_csm_sees_the_raw_image_and_mask():
    assert _official().csm_image == "raw"


def test_row_mask_channel_in_training_keeps_the_documented_fix():
    assert _official().training.legacy_mask_range is False  # parity with a released checkpoint: set it True


def test_row_asea_is_5_passes_at_lr_0_1():
    opts = _official()
    assert (opts.asea_steps, opts.asea_lr) == (5, 0.1)


def test_row_sampler_is_50_pndm_steps_strength_0_7_guidance_7():
    opts = _official()
    assert (SCHEDULES[opts.schedule].inference_steps, opts.strength, opts.guidance) == (50, 0.7, 7.0)
    assert opts.negative_prompt == "monochrome, lowres, bad anatomy, worst quality, low quality"


def test_row_training_schedule_is_200k_micro_batches_of_8():
    s = SCHEDULES[_official().schedule]
    assert (s.train_steps * s.grad_accumulation, s.batch_size, s.learning_rate) == (200_000, 8, 1e-4)


def test_row_prompt_is_the_references_caption():
    assert _official().prompt == "reference"


def test_a_setting_given_in_the_protocol_wins_over_the_preset():
    opts = _official(composite="inside", train_scale=0.25)
    assert (opts.composite, opts.train_scale, opts.sampling_seed) == ("inside", 0.25, 42)
    acbench = AnomalyControlOptions().resolved()
    assert (acbench.preset, acbench.train_scale, acbench.composite, acbench.sampling_seed) == (
        "acbench",
        0.5,
        "inside",
        "per-image",
    )


def test_official_without_released_masks_says_what_to_do(monkeypatch):
    monkeypatch.delenv(RELEASED_MASKS_ENV, raising=False)
    cls = registry.load("methods", "anomalycontrol")
    with pytest.raises(UserError, match=RELEASED_MASKS_ENV):
        cls({"preset": "official", "model": "tiny"}).check()
    cls({"preset": "acbench", "model": "tiny"}).check()  # real-augmented masks: nothing to find
    monkeypatch.setenv(RELEASED_MASKS_ENV, "/no/such/folder")
    with pytest.raises(UserError, match="ANOMALYDIFFUSION_MASKS: folder /no/such/folder not found"):
        cls({"preset": "official", "model": "tiny"}).check()


# ------------------------------------------------------------------ behaviour behind the rows


@pytest.mark.parametrize("preset, expected", [("official", 1.0), ("acbench", 0.5)])
def test_lambda_seen_by_the_adapter_during_training_is_the_configured_one(
    demo_root, tmp_path, monkeypatch, preset, expected
):
    seen = []
    original = IPAdapterAttnProcessor2_0.__call__

    def spy(self, *args, **kwargs):
        if torch.is_grad_enabled():  # training forward passes (sampling runs under no_grad)
            seen.append(list(self.scale))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(IPAdapterAttnProcessor2_0, "__call__", spy)
    cls = registry.load("methods", "anomalycontrol")
    method = cls(
        {
            "preset": preset,
            "model": "tiny",
            "schedule": "tiny",
            "train_steps": 1,
            "cache_dir": str(tmp_path / "cache"),
            "captions": None,
        }
    )
    method.fit([_brick(demo_root)], tmp_path, seed=0)
    assert seen and all(s == [expected] for s in seen)


def test_legacy_mask_range_feeds_minus_one_and_plus_one(tmp_path):
    model = AnomalyControlModel.build(AnomalyControlOptions(model="tiny", cache_dir=tmp_path), "random")
    mask = np.zeros((SIZE, SIZE), bool)
    mask[16:48, 16:48] = True
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    data = prepare_training_set(model.components, [image], [mask], ["x"], torch.zeros(1, 32))
    plain = draw_batch(data, model.components, 1, 0, 0, dropout=False)["model_input"][:, 4]
    legacy = draw_batch(data, model.components, 1, 0, 0, dropout=False, legacy_mask_range=True)["model_input"][:, 4]
    assert set(plain.unique().tolist()) == {0.0, 1.0} and set(legacy.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(legacy, plain * 2 - 1)


def test_official_csm_keeps_the_vit_in_fp32_under_half_precision(tmp_path):
    opts = AnomalyControlOptions(preset="official", model="tiny", cache_dir=tmp_path)
    official = AnomalyControlModel.build(opts, "random", dtype=torch.bfloat16)
    acbench = AnomalyControlModel.build(
        AnomalyControlOptions(model="tiny", cache_dir=tmp_path), "random", dtype=torch.bfloat16
    )
    assert official.csm.model.vision_model.dtype == torch.float32
    assert acbench.csm.model.vision_model.dtype == torch.bfloat16


def test_lavis_cleaning_keeps_commas_hyphens_and_apostrophes():
    text = "The zipper's fabric border is damaged, with a gel-like (brown) filler."
    assert clean_caption(text, mode="lavis") == "the zipper's fabric border is damaged, with a gel-like brown filler"
    assert clean_caption(text, mode="strict") == "the zipper s fabric border is damaged with a gel like brown filler"


# ------------------------------------------------------------------ captions in the official format


def _write_mvtec_caption(root: Path, data, text="The brick has a deep crack, near the edge {i}."):
    """A miniature MVTec-Caption: `<category>/prompt/<defect>/<stem>.txt` beside `test/`."""
    written = {}
    for atype, examples in data.synthesis.items():
        for i, ex in enumerate(examples):
            folder = root / data.category / "prompt" / atype
            folder.mkdir(parents=True, exist_ok=True)
            caption = text.format(i=f"{atype} {i}")
            (folder / f"{ex.image_path.stem}.txt").write_text(caption + "\n")
            written[ex.image_path.relative_to(data.root).as_posix()] = caption
    return written


def test_mvtec_caption_reaches_the_qformer_text_the_training_prompt_and_the_inference_prompt(
    demo_root, tmp_path, monkeypatch
):
    root = tmp_path / "data"
    shutil.copytree(demo_root / "brick", root / "brick")  # prompt/ folders go into this copy
    data = _brick(root)
    written = _write_mvtec_caption(root, data)
    qformer_texts, training_captions, prompts = [], [], []
    original_call = CrossModalSemantics.__call__

    def csm_spy(self, images, texts, masks, *args, **kwargs):
        qformer_texts.extend(texts or [])
        return original_call(self, images, texts, masks, *args, **kwargs)

    def training_spy(components, images, masks, captions, features, **kw):
        training_captions.extend(captions)
        return prepare_training_set(components, images, masks, captions, features, **kw)

    original_sample = speed_module.sample_inpaint  # what the model's sampler calls

    seeds_used, cleaned = [], []

    def sample_spy(pipe, images, masks, prompt_list, seeds, *args, **kwargs):
        prompts.extend(prompt_list)
        seeds_used.extend(seeds)
        return original_sample(pipe, images, masks, prompt_list, seeds, *args, **kwargs)

    original_clean = csm_module.clean_caption

    def clean_spy(text, *args, **kwargs):
        cleaned.append(original_clean(text, *args, **kwargs))
        return cleaned[-1]

    monkeypatch.setattr(csm_module, "clean_caption", clean_spy)

    monkeypatch.setattr(CrossModalSemantics, "__call__", csm_spy)
    monkeypatch.setattr(plugin_module, "prepare_training_set", training_spy)
    monkeypatch.setattr(speed_module, "sample_inpaint", sample_spy)
    cls = registry.load("methods", "anomalycontrol")
    options = {
        "preset": "official",
        "model": "tiny",
        "schedule": "tiny",
        "train_steps": 1,
        "cache_dir": str(tmp_path / "cache"),
        "mask_source": {"name": "real-augmented"},
    }
    (tmp_path / "fit").mkdir()
    cls(options).fit([data], tmp_path / "fit", seed=0)
    assert set(qformer_texts) == set(written.values()) and set(training_captions) == set(written.values())
    atype = sorted(data.synthesis)[0]
    samples = list(cls(options).generate(data, GenerationRequest(atype, 2, seed=0, fit_dir=tmp_path / "fit")))
    assert len(samples) == 2 and prompts and set(prompts) <= {c for p, c in written.items() if f"/test/{atype}/" in p}
    info = json.loads((tmp_path / "fit" / "anomalycontrol.json").read_text())
    assert info["provenance"]["captions"].startswith("MVTec-Caption") and info["provenance"]["preset"] == "official"
    # the Q-Former tokenizer gets the LAVIS-cleaned caption: lower case, full stop gone, comma kept
    assert {clean_caption(c, mode="lavis") for c in written.values()} <= set(cleaned)
    assert all("," in c and "." not in c and c == c.lower() for c in cleaned)
    assert seeds_used == [42, 42]  # the released script's fixed sampling seed, for every image
    for sample in samples:  # the sigma-5 blend also changes a halo just outside the target mask
        normal = data.normal_image(data.normal_train.index(data.root / sample.source_normal))
        assert not np.array_equal(sample.image[~sample.mask], normal[~sample.mask])


def test_official_json_list_and_path_dict_are_read_and_a_missing_caption_is_marked(demo_root, tmp_path):
    data = _brick(demo_root)
    first, second = data.synthesis["crack"][:2]
    relative = first.image_path.relative_to(data.root).as_posix()
    (tmp_path / "ano_data_train.json").write_text(
        json.dumps(
            [
                {
                    "image_file": relative,
                    "text": "The brick has a thin crack.",
                    "mask_file": "m.png",
                    "subject_text": "crack",
                }
            ]
        )
    )
    captions = load_captions(tmp_path / "ano_data_train.json")
    assert captions.caption(first, data, "The {category} has {defect}") == "The brick has a thin crack."
    assert captions.caption(second, data, "The {category} has {defect}") == "The brick has crack"
    assert captions.provenance()["captions"] == TEMPLATE_MARK and captions.provenance()["n_template_captions"] == 1
    (tmp_path / "dict.json").write_text(json.dumps({relative: "A dict caption."}))
    assert load_captions(tmp_path / "dict.json").caption(first, data, "{category}") == "A dict caption."
    (tmp_path / "bad.json").write_text(json.dumps([{"file": 1}]))
    with pytest.raises(UserError, match="bad.json: expected the official"):
        load_captions(tmp_path / "bad.json")
    with pytest.raises(UserError, match="captions: .* not found"):
        load_captions(tmp_path / "nowhere")


def test_template_fallback_is_marked_in_the_provenance(demo_root, tmp_path):
    cls = registry.load("methods", "anomalycontrol")
    method = cls({"model": "tiny", "schedule": "tiny", "train_steps": 1, "cache_dir": str(tmp_path / "c")})
    method.fit([_brick(demo_root)], tmp_path, seed=0)
    prov = method.provenance()
    assert prov["captions"] == TEMPLATE_MARK and prov["preset"] == "acbench"


# ------------------------------------------------------------------ IP-Adapter SD-1.5 keys

# The key layout of h94/IP-Adapter `models/ip-adapter_sd15`, written out from its documentation (the
# IP-Adapter code numbers every attention processor of the SD-1.5 UNet in `unet.attn_processors` order,
# down blocks, up blocks, mid block; only cross-attentions have weights: the odd numbers) - not from sga.py.
_SD15_CROSS_ATTENTIONS = (
    [(f"down_blocks.{b}.attentions.{a}", w) for b, w in ((0, 320), (1, 640), (2, 1280)) for a in (0, 1)]
    + [(f"up_blocks.{b}.attentions.{a}", w) for b, w in ((1, 1280), (2, 640), (3, 320)) for a in (0, 1, 2)]
    + [("mid_block.attentions.0", 1280)]
)
IP_ADAPTER_SD15_KEYS = {
    "image_proj.proj.weight": (3072, 1024),
    "image_proj.proj.bias": (3072,),
    "image_proj.norm.weight": (768,),
    "image_proj.norm.bias": (768,),
    **{
        f"ip_adapter.{2 * i + 1}.to_{kv}_ip.weight": (width, 768)
        for i, (_, width) in enumerate(_SD15_CROSS_ATTENTIONS)
        for kv in ("k", "v")
    },
}


def test_ip_adapter_sd15_key_list_maps_onto_every_cross_attention_of_sd15(tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    from acbench_methods.diffusion.components import SD15_UNET

    assert len(IP_ADAPTER_SD15_KEYS) == 4 + 32
    with torch.device("meta"):  # the SD-1.5 UNet's layout without its 860 M weights
        unet = UNet2DConditionModel(**SD15_UNET)
    monkeypatch.setattr(SemanticGuidedAdapter, "_init_from_text_projections", lambda self, unet: None)
    adapter = SemanticGuidedAdapter(unet, 768, proj_dim=1024, num_tokens=4)  # real tensors (23 M)
    g = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(shape, generator=g, dtype=torch.float16).float() for k, shape in IP_ADAPTER_SD15_KEYS.items()
    }
    save_file(state, tmp_path / "ip-adapter_sd15.safetensors")
    adapter.load_ip_adapter(tmp_path / "ip-adapter_sd15.safetensors")
    layers = dict(zip(adapter.layer_names, adapter.layers))
    for i, (block, _) in enumerate(_SD15_CROSS_ATTENTIONS):
        layer = layers[f"{block}.transformer_blocks.0.attn2.processor"]
        assert torch.equal(layer.to_k_ip[0].weight, state[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"]), block
        assert torch.equal(layer.to_v_ip[0].weight, state[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"]), block
    assert torch.equal(adapter.projection.image_proj.image_embeds.weight, state["image_proj.proj.weight"])
    assert torch.equal(adapter.projection.image_proj.norm.bias, state["image_proj.norm.bias"])
    # the original .bin: the same names nested under image_proj / ip_adapter
    nested = {"image_proj": {}, "ip_adapter": {}}
    for key, value in state.items():
        group, rest = key.split(".", 1)
        nested[group][rest] = value
    torch.save(nested, tmp_path / "ip-adapter_sd15.bin")
    other = SemanticGuidedAdapter(unet, 768, proj_dim=1024, num_tokens=4)
    other.load_ip_adapter(tmp_path / "ip-adapter_sd15.bin")
    ours, theirs = adapter.state_dict(), other.state_dict()
    loaded = [k for k in ours if not k.startswith("projection.feature_proj")]  # BlipProj: not in IP-Adapter
    assert len(loaded) == 36 and all(torch.equal(ours[k], theirs[k]) for k in loaded)


def test_ip_adapter_is_resolved_from_the_hub_cache_and_listed_by_weights_check(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from acbench.engine.requirements import check_weights
    from acbench.protocol import Protocol
    from acbench_methods.anomalycontrol.presets import resolve_ip_adapter

    snapshot = tmp_path / "hub" / "models--h94--IP-Adapter" / "snapshots" / "abc123"
    (snapshot / "models").mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, snapshot / "models" / "ip-adapter_sd15.safetensors")
    (tmp_path / "hub" / "models--h94--IP-Adapter" / "refs").mkdir()
    (tmp_path / "hub" / "models--h94--IP-Adapter" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    found = resolve_ip_adapter("pretrained")
    assert found.source == "cache" and found.path.endswith("models/ip-adapter_sd15.safetensors")
    protocol = Protocol.model_validate(
        {
            "name": "p",
            "dataset": {"kind": "demo"},
            "weights": "pretrained",
            "methods": [{"name": "anomalycontrol", "options": {"preset": "official"}}],
        }
    )
    status = {s.name: s for s in check_weights(protocol)}
    assert status["ip-adapter-sd15"].found is True
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="ip-adapter-sd15"):
        resolve_ip_adapter("pretrained")
    assert resolve_ip_adapter("pretrained-or-random").is_random


# ------------------------------------------------------------------ resume key of an interrupted fit


def test_an_interrupted_fit_is_not_resumed_after_the_split_changes(demo_root, tmp_path, monkeypatch):
    cls = registry.load("methods", "anomalycontrol")
    options = {"model": "tiny", "schedule": "tiny", "train_steps": 2, "cache_dir": str(tmp_path / "cache")}
    original_save = SemanticGuidedAdapter.save

    def interrupted_save(self, path):
        if Path(path).name.startswith("adapter-"):  # the final artifact: "killed" just before it
            raise KeyboardInterrupt
        return original_save(self, path)

    resumed = []
    original_train = plugin_module.train_adapter

    def train_spy(*args, **kwargs):
        report = original_train(*args, **kwargs)
        resumed.append(report.resumed_from)
        return report

    monkeypatch.setattr(plugin_module, "train_adapter", train_spy)
    workdir = tmp_path / "artifacts" / "fit-job"
    workdir.mkdir(parents=True)
    with monkeypatch.context() as m:
        m.setattr(SemanticGuidedAdapter, "save", interrupted_save)
        with pytest.raises(KeyboardInterrupt):
            cls(options).fit([_brick(demo_root)], workdir, seed=0)
    assert list((workdir.parent / ".anomalycontrol-checkpoints").glob("*/step-2"))

    other_split = _brick(demo_root, SplitConfig(order="random", seed=3))
    assert other_split.synthesis != _brick(demo_root).synthesis
    cls(options).fit([other_split], workdir, seed=0)
    assert resumed[-1] == 0  # trained afresh on the new split
    cls(options).fit([_brick(demo_root)], workdir, seed=0)  # the interrupted split again: it resumes
    assert resumed[-1] == 2


def test_an_adapter_never_trained_on_a_category_is_refused(demo_root, tmp_path):
    cls = registry.load("methods", "anomalycontrol")
    options = {"model": "tiny", "schedule": "tiny", "train_steps": 1, "cache_dir": str(tmp_path / "cache")}
    cls(options).fit([_brick(demo_root)], tmp_path, seed=0)
    grass = load_category(demo_root, "grass", SplitConfig(), dataset="demo", image_size=SIZE)
    with pytest.raises(UserError, match="trained on brick, not on 'grass'"):
        next(cls(options).generate(grass, GenerationRequest("hole", 1, seed=0, fit_dir=tmp_path)))
