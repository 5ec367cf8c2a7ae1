"""AnomalyControl's `train_resize`: the released training transform (bilinear shorter side + centre crop,
soft mask, masked image blanked where the mask is >= 0.75) against an independent torchvision computation of
the released dataset's arithmetic, and the `bicubic` view of the `acbench` preset left as it was."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_helpers import error_lines, run_cli, write_protocol
from PIL import Image
from torchvision import transforms

from acbench import registry
from acbench.data.category import CategoryData, DefectExample
from acbench.data.io import save_png
from acbench_methods.anomalycontrol import plugin as plugin_module
from acbench_methods.anomalycontrol.cache import Reference
from acbench_methods.anomalycontrol.model import AnomalyControlModel
from acbench_methods.anomalycontrol.options import AnomalyControlOptions
from acbench_methods.anomalycontrol.references import PAINT_THRESHOLD, training_view
from acbench_methods.anomalycontrol.train import draw_batch, prepare_training_set

torch.set_num_threads(1)
TINY = 64  # the tiny model's diffusion resolution


def _example(folder, width, height, seed=0):
    """A non-square anomaly: a smooth random image and a rectangle mask whose edges fall between the
    pixels of the resized grid, so the bilinear mask has soft values on both sides of 0.5 and 0.75."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
    mask = np.zeros((height, width), bool)
    mask[height // 4 + 1 : height // 2 + 2, width // 3 + 1 : (2 * width) // 3] = True
    folder.mkdir(parents=True, exist_ok=True)
    save_png(folder / f"{seed:03d}.png", image)
    save_png(folder / f"{seed:03d}_mask.png", mask)
    return DefectExample(folder / f"{seed:03d}.png", folder / f"{seed:03d}_mask.png", "crack")


def _released(example, size):
    """The released InpaintingDataset's tensors, computed independently: one torchvision transform for the
    image and for the mask file (Resize(size, bilinear), CenterCrop, ToTensor, Normalize(0.5, 0.5)), the
    masked image blanked where the normalised mask is >= 0.5."""
    transform = transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ]
    )
    image = transform(Image.open(example.image_path).convert("RGB"))
    mask = transform(Image.open(example.mask_path).convert("L"))
    return image, mask, image * (mask < 0.5)


def _as_tensors(image, mask):
    """Our view in the released ranges: image and mask in [-1, 1], channels first."""
    x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 127.5 - 1
    return x, torch.from_numpy(np.asarray(mask, dtype=np.float32))[None] * 2 - 1


@pytest.mark.parametrize("width, height", [(300, 200), (700, 900)])  # upsampled / downsampled (antialiased)
@pytest.mark.parametrize("raw", [False, True])
def test_bilinear_crop_reproduces_the_released_transform_at_512(tmp_path, width, height, raw):
    example = _example(tmp_path, width, height)
    ref = Reference(example.image(512), example.mask(512), "c", *((example.image(), example.mask()) if raw else ()))
    image, mask = training_view(example, ref, 512, "bilinear-crop")
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8 and mask.shape == (512, 512)
    want_image, want_mask, _ = _released(example, 512)
    got_image, got_mask = _as_tensors(image, mask)
    assert torch.allclose(got_image, want_image, atol=1e-6)
    assert torch.allclose(got_mask, want_mask, atol=1e-6)
    soft = mask[(mask > 0) & (mask < 1)]
    assert soft.size > 0  # the bilinear mask is soft, not the binary nearest one
    # the bicubic view stretches the whole image to a square; the released crop drops the long side's ends
    assert not np.array_equal(image, ref.image)


def test_masked_image_is_blanked_exactly_where_the_resized_mask_reaches_0_75(tmp_path):
    example = _example(tmp_path, 300, 200)
    model = AnomalyControlModel.build(AnomalyControlOptions(model="tiny", cache_dir=tmp_path / "c"), "random")
    ref = Reference(example.image(TINY), example.mask(TINY), "c")
    image, mask = training_view(example, ref, TINY, "bilinear-crop")
    assert ((mask >= 0.5) & (mask < 0.75)).any()  # where a 0.5 threshold would blank too: the rule matters
    encoded = []
    encode = model.components.vae.encode

    def spy(x, *args, **kwargs):
        encoded.append(x.detach().float().cpu())
        return encode(x, *args, **kwargs)

    model.components.vae.encode = spy
    data = prepare_training_set(
        model.components, [image], [mask], ["c"], torch.zeros(1, 32), paint_threshold=PAINT_THRESHOLD["bilinear-crop"]
    )
    want_image, want_mask, want_masked = _released(example, TINY)
    x, masked = encoded[0][0], encoded[1][0]
    assert torch.allclose(x, want_image, atol=1e-6) and torch.allclose(masked, want_masked, atol=1e-6)
    blank = torch.from_numpy(mask >= 0.75).expand_as(masked)
    assert torch.equal(masked == 0, blank | (x == 0)) and torch.equal(masked[~blank], x[~blank])
    # the UNet's mask channel is the soft mask sampled to the latent grid, as released (-1/+1 under legacy)
    legacy = draw_batch(data, model.components, 1, 0, 0, dropout=False, legacy_mask_range=True)["model_input"][0, 4]
    released = F.interpolate(want_mask[None], size=legacy.shape)[0, 0]
    assert torch.allclose(legacy, released, atol=1e-6) and ((released > -1) & (released < 1)).any()


def test_the_presets_choose_and_a_given_value_wins():
    assert AnomalyControlOptions(preset="official").resolved().train_resize == "bilinear-crop"
    assert AnomalyControlOptions().resolved().train_resize == "bicubic"
    assert AnomalyControlOptions(preset="official", train_resize="bicubic").resolved().train_resize == "bicubic"


class _Stop(Exception):
    pass


def _category(root):
    examples = [_example(root / "widget" / "test" / "crack", 150, 100, seed) for seed in (0, 1)]
    normal = root / "widget" / "train" / "good" / "000.png"
    save_png(normal, np.full((100, 150, 3), 128, np.uint8))
    return CategoryData("t", "widget", root, [normal], {"crack": examples}, [], {})


@pytest.mark.parametrize(
    "options, mode",
    [
        ({"preset": "acbench"}, "bicubic"),
        ({"preset": "official"}, "bilinear-crop"),
        ({"preset": "acbench", "train_resize": "bilinear-crop"}, "bilinear-crop"),
        ({"preset": "official", "train_resize": "bicubic"}, "bicubic"),
    ],
)
def test_fit_trains_on_the_chosen_view(tmp_path, monkeypatch, options, mode):
    data = _category(tmp_path / "data")
    seen = {}

    def spy(components, images, masks, captions, features, **kw):
        seen.update(images=images, masks=masks, **kw)
        raise _Stop  # what training receives is all this test needs

    monkeypatch.setattr(plugin_module, "prepare_training_set", spy)
    cls = registry.load("methods", "anomalycontrol")
    method = cls({**options, "model": "tiny", "schedule": "tiny", "cache_dir": str(tmp_path / "c"), "asea_steps": 1})
    with pytest.raises(_Stop):
        method.fit([data], tmp_path / "fit", seed=0)
    examples = data.synthesis["crack"]
    if mode == "bicubic":  # exactly the arrays the adapter trained on before the option existed
        assert seen["paint_threshold"] == 0.5
        assert all(np.array_equal(i, ex.image(TINY)) for i, ex in zip(seen["images"], examples, strict=True))
        assert all(m.dtype == bool and np.array_equal(m, ex.mask(TINY)) for m, ex in zip(seen["masks"], examples))
    else:
        assert seen["paint_threshold"] == 0.75
        for image, mask, ex in zip(seen["images"], seen["masks"], examples, strict=True):
            want_image, want_mask, _ = _released(ex, TINY)
            got_image, got_mask = _as_tensors(image, mask)
            assert torch.allclose(got_image, want_image, atol=1e-6) and torch.allclose(got_mask, want_mask, atol=1e-6)
            assert not np.array_equal(image, ex.image(TINY))  # the switch changes what training sees


def test_a_bad_train_resize_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    protocol = write_protocol(
        tmp_path, methods=[{"name": "anomalycontrol", "options": {"model": "tiny", "train_resize": "bilinear"}}]
    )
    code = run_cli(monkeypatch, "plan", protocol)
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "methods[0].options.train_resize" in lines[0] and "bilinear-crop" in lines[0], lines[0]


def test_job_hashes_change_only_where_training_changed():
    """The options dump (what job hashes are made of) leaves out an unset train_resize exactly where the
    preset resizes as every preset did before the option: those studies resume; official ones refit. A
    dump validates back to the same options (nothing a worker re-reads is lost)."""
    for options, in_dump in (({"preset": "acbench"}, False), ({"preset": "official"}, True),
                             ({"preset": "official", "train_resize": "bicubic"}, True),
                             ({"preset": "acbench", "train_resize": "bilinear-crop"}, True)):
        parsed = AnomalyControlOptions.model_validate(options)
        dump = parsed.model_dump(mode="json")
        assert ("train_resize" in dump) == in_dump, options
        again = AnomalyControlOptions.model_validate(dump)
        assert again == parsed and again.resolved().train_resize == parsed.resolved().train_resize
