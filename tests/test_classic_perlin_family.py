"""The Perlin family (MemSeg, DeSTSeg, GLASS, RealNet): which pixels change, reproducibility, the presets,
and each method's defining arithmetic recovered from pairs built on constant images and textures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from acbench_methods.classic.common import PerlinFamily, threshold_foreground
from acbench_methods.classic.memseg import shuffle_grid
from acbench_methods.classic.realnet import foreground_rule, realnet_foreground
from engine_helpers import error_lines, run_cli, write_protocol
from PIL import Image

from acbench import registry
from acbench.data.category import CategoryData
from acbench.data.demo import DEMO_TEXTURES, STAND_IN_TEXTURES, materialise_demo_textures
from acbench.data.io import load_rgb
from acbench.errors import UserError
from acbench.synthesis import GenerationRequest

SIZE = 64


@pytest.fixture(scope="module")
def textures(tmp_path_factory) -> Path:
    """Six random-noise textures of different sizes (a DTD stand-in)."""
    folder = tmp_path_factory.mktemp("dtd") / "images"
    rng = np.random.default_rng(0)
    for i in range(6):
        sub = folder / f"class{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 50, 3), dtype=np.uint8)).save(sub / f"t{i}.jpg")
    return folder


def _constant_folder(folder: Path, colour, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((30, 30, 3), colour, np.uint8)).save(folder / f"c{i}.png")
    return folder


def _category(tmp_path: Path, image: np.ndarray, category: str = "carpet", dataset: str = "mvtec") -> CategoryData:
    """A one-image category (the normal image is `image`) for the arithmetic tests."""
    path = tmp_path / category / "train" / "good" / "000.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return CategoryData(dataset=dataset, category=category, root=tmp_path, normal_train=[path], synthesis={},
                        eval_normal=[], eval_anomalies={})


def _generate(name, options, data, seed=0, count=6):
    method = registry.load("methods", name)(options)
    return list(method.generate(data, GenerationRequest("crack", count, seed)))


def _cases(textures: Path) -> dict[str, tuple[str, dict]]:
    return {
        "memseg": ("memseg", {"texture_path": str(textures)}),
        "memseg-self": ("memseg", {}),
        "destseg": ("destseg", {"texture_path": str(textures)}),
        "glass": ("glass", {"texture_path": str(textures)}),
        "realnet": ("realnet", {"sdas_path": str(textures)}),
    }


CASES = ["memseg", "memseg-self", "destseg", "glass", "realnet"]


@pytest.mark.parametrize("case", CASES)
def test_changes_only_inside_a_non_empty_mask(brick, textures, case):
    """Official presets: every pixel outside the mask is the normal image's, byte for byte; inside, the
    blend visibly changes most pixels."""
    name, options = _cases(textures)[case]
    samples = _generate(name, options, brick, count=8)
    assert len(samples) == 8
    for sample in samples:
        normal = load_rgb(brick.root / sample.source_normal)
        changed = np.any(sample.image != normal, axis=2)
        assert sample.mask.any(), "empty mask"
        assert not (changed & ~sample.mask).any(), "pixels changed outside the mask"
        assert changed[sample.mask].mean() > 0.3


@pytest.mark.parametrize("case", CASES)
def test_same_seed_same_pair_other_seed_differs(brick, textures, case):
    name, options = _cases(textures)[case]

    def pairs(seed):
        return [(s.image.tobytes(), s.mask.tobytes()) for s in _generate(name, options, brick, seed=seed, count=3)]

    assert pairs(0) == pairs(0)
    assert pairs(0) != pairs(1)


@pytest.mark.parametrize("name, options", [("memseg", {}), ("destseg", {}), ("realnet", {})])
def test_asbench_preset_pre_rotates_the_normal_image(brick, textures, name, options):
    """ASBench's wrapper rotates ~30 % of the normal images before synthesis, so pixels outside the mask no
    longer match the file; the official preset never does."""
    key = "sdas_path" if name == "realnet" else "texture_path"
    base = {key: str(textures), **options}

    def rotated_share(preset):
        samples = _generate(name, {**base, "preset": preset}, brick, count=20)
        moved = [np.any((s.image != load_rgb(brick.root / s.source_normal)).any(axis=2) & ~s.mask)
                 for s in samples]
        return np.mean(moved)

    assert rotated_share("official") == 0
    assert 0.1 <= rotated_share("asbench") <= 0.6


# --------------------------------------------------------------------------------------------- #
# MemSeg


def test_memseg_transparency_recovered_from_a_constant_texture(tmp_path):
    """Blue image, red texture: a texture-sourced pair is delta*red + (1-delta)*blue inside the mask, so
    R = 255*delta, G = 0, R + B = 255; delta must span MemSeg's U(0.15, 1). About half the pairs use the
    texture (p = 0.5), the rest the shuffled self-patch (an augmented blue: no red, or green as well)."""
    data = _category(tmp_path, np.tile(np.array([0, 0, 255], np.uint8), (SIZE, SIZE, 1)))
    red = _constant_folder(tmp_path / "red", (255, 0, 0))
    samples = _generate("memseg", {"texture_path": str(red)}, data, count=60)
    deltas = []
    for s in samples:
        inside = s.image[s.mask].astype(int)
        texture_sourced = (inside[:, 0] > 2).all() and (inside[:, 1] == 0).all()
        if texture_sourced and (np.abs(inside[:, 0] + inside[:, 2] - 255) <= 1).all():
            assert np.ptp(inside[:, 0]) <= 1, "one delta per pair"
            deltas.append(inside[:, 0].mean() / 255)
    assert 15 <= len(deltas) <= 45, len(deltas)
    assert min(deltas) >= 0.15 - 0.01 and max(deltas) <= 1.0
    assert min(deltas) < 0.4 and max(deltas) > 0.75  # spread over the range, not a constant


def test_memseg_structure_source_is_a_tile_permutation():
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    shuffled = shuffle_grid(image, np.random.default_rng(1), grid=8)
    assert not np.array_equal(shuffled, image)

    def tiles(x):
        return sorted(x[i:i + 8, j:j + 8].tobytes() for i in range(0, 64, 8) for j in range(0, 64, 8))

    assert tiles(shuffled) == tiles(image)


def _half_dark(value_dark=30, value_bright=200) -> np.ndarray:
    image = np.full((SIZE, SIZE, 3), value_bright, np.uint8)
    image[:, : SIZE // 2] = value_dark
    return image


def test_memseg_per_category_foreground_and_the_asbench_global_one(tmp_path):
    """hazelnut in anomaly_mask.json: threshold 50, reversed -> the bright half is the foreground. ASBench
    uses threshold 100, not reversed, for every category -> the dark half. carpet: no foreground mask."""
    image = _half_dark()
    bright = np.zeros((SIZE, SIZE), bool)
    bright[:, SIZE // 2:] = True
    hazelnut = _category(tmp_path, image, "hazelnut")
    for preset, allowed in (("official", bright), ("asbench", ~bright)):
        method = registry.load("methods", "memseg")({"preset": preset})
        rng = np.random.default_rng(0)
        union = np.zeros_like(bright)
        for _ in range(15):
            _, mask = method.synthesise(image, hazelnut, rng)
            assert not (mask & ~allowed).any(), preset
            union |= mask
        assert union.any()
    carpet = registry.load("methods", "memseg")({})
    rng = np.random.default_rng(0)
    union = np.zeros_like(bright)
    for _ in range(15):
        union |= carpet.synthesise(image, _category(tmp_path, image, "carpet"), rng)[1]
    assert union[:, : SIZE // 2].any() and union[:, SIZE // 2:].any()
    # a per-category override from the protocol replaces the table's entry
    override = registry.load("methods", "memseg")({"foreground": {"hazelnut": {"use_mask": False}}})
    assert override.foreground_setting("hazelnut").use_mask is False
    np.testing.assert_array_equal(threshold_foreground(image, 50, True), bright)


def test_memseg_asbench_texture_is_channel_swapped(tmp_path):
    """ASBench reads the normal image as BGR but converts the DTD texture to RGB: on a grey image a red
    texture blends in as red under `official` and as blue under `asbench` (structure sources stay grey)."""
    image = np.full((SIZE, SIZE, 3), 100, np.uint8)
    data = _category(tmp_path, image, "carpet")
    red = _constant_folder(tmp_path / "red", (255, 0, 0))
    def pattern(out, mask):  # delta*(255, 0, 0) + (1-delta)*100 has G == B; its swapped form has R == G
        r, g, b = (out[mask][:, i].astype(int) for i in range(3))
        if (np.abs(g - b) <= 1).all() and (r - b > 20).all():
            return "red"
        if (np.abs(r - g) <= 1).all() and (b - r > 20).all():
            return "blue"
        return "other"

    for preset, expected, never in (("official", "red", "blue"), ("asbench", "blue", "red")):
        method = registry.load("methods", "memseg")({"texture_path": str(red), "preset": preset})
        rng = np.random.default_rng(0)
        seen = [pattern(*method.synthesise(image, data, rng)) for _ in range(20)]
        assert seen.count(expected) >= 4 and never not in seen, (preset, seen)


# --------------------------------------------------------------------------------------------- #
# DeSTSeg


def _recorded_scales(monkeypatch) -> list[tuple[int, int]]:
    import anomalib.data.utils.generators.perlin as anomalib_perlin

    seen: list[tuple[int, int]] = []
    original = anomalib_perlin.generate_perlin_noise

    def spy(*args, scale=None, **kwargs):
        seen.append(tuple(scale))
        return original(*args, scale=scale, **kwargs)

    monkeypatch.setattr(anomalib_perlin, "generate_perlin_noise", spy)
    return seen


@pytest.mark.parametrize("preset, largest", [("official", 32), ("asbench", 8)])
def test_destseg_noise_scale_range(monkeypatch, tmp_path, textures, preset, largest):
    """DeSTSeg draws each axis' Perlin scale as 2**randint(0, 6) (1..32); ASBench's fork 2**randint(0, 4)."""
    seen = _recorded_scales(monkeypatch)
    data = _category(tmp_path, np.full((SIZE, SIZE, 3), 120, np.uint8))
    method = registry.load("methods", "destseg")({"texture_path": str(textures), "preset": preset})
    rng = np.random.default_rng(0)
    for _ in range(40):
        method.synthesise(data.normal_image(0), data, rng)
    scales = {s for pair in seen for s in pair}
    assert scales <= {2**k for k in range(6)} and max(scales) == largest and min(scales) == 1


def test_destseg_blend_beta_recovered_from_constant_images(tmp_path):
    """Inside the mask out = beta*image + (1-beta)*texture with beta = 0.8*U(0, 1): grey 200 on texture 20
    gives beta = (out - 20) / 180 in [0, 0.8], spread over the range."""
    data = _category(tmp_path, np.full((SIZE, SIZE, 3), 200, np.uint8))
    dark = _constant_folder(tmp_path / "dark", (20, 20, 20))
    betas = []
    for s in _generate("destseg", {"texture_path": str(dark)}, data, count=40):
        inside = s.image[s.mask].astype(float)
        assert np.ptp(inside) <= 1
        betas.append((inside.mean() - 20) / 180)
    assert min(betas) >= -0.01 and max(betas) <= 0.8 + 0.01
    assert min(betas) < 0.15 and max(betas) > 0.65


# --------------------------------------------------------------------------------------------- #
# GLASS


def test_glass_beta_is_a_clipped_normal(tmp_path):
    """beta ~ N(0.5, 0.1) clipped to [0.2, 0.8], recovered as in DeSTSeg (no texture augmentation here)."""
    data = _category(tmp_path, np.full((SIZE, SIZE, 3), 200, np.uint8))
    dark = _constant_folder(tmp_path / "dark", (20, 20, 20))
    betas = []
    for s in _generate("glass", {"texture_path": str(dark), "rand_aug": False}, data, count=60):
        inside = s.image[s.mask].astype(float)
        assert np.ptp(inside) <= 1
        betas.append((inside.mean() - 20) / 180)
    betas = np.array(betas)
    assert betas.min() >= 0.2 - 0.01 and betas.max() <= 0.8 + 0.01
    assert abs(betas.mean() - 0.5) < 0.04 and 0.06 < betas.std() < 0.14


def test_glass_masks_stay_on_the_released_foreground(tmp_path):
    """With `foreground_path`, GLASS's fg_mask/<category>/<file> limits every mask (left half here)."""
    data = _category(tmp_path, np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    fg = np.zeros((SIZE, SIZE), np.uint8)
    fg[:, : SIZE // 2] = 255
    (tmp_path / "fg" / "carpet").mkdir(parents=True)
    Image.fromarray(fg).save(tmp_path / "fg" / "carpet" / "000.png")
    dtd = _constant_folder(tmp_path / "dtd", (20, 20, 20))
    for s in _generate("glass", {"texture_path": str(dtd), "foreground_path": str(tmp_path / "fg")}, data, count=10):
        assert s.mask.any() and not s.mask[:, SIZE // 2:].any()


# --------------------------------------------------------------------------------------------- #
# RealNet


def test_realnet_blends_sdas_pixels_of_the_category(tmp_path):
    """The SDAS image comes from <sdas_path>/<category>/ (black here; white for another category), with
    factor f ~ U(0.5, 1): grey 200 becomes (1 - f) * 200, i.e. 0..100."""
    data = _category(tmp_path, np.full((SIZE, SIZE, 3), 200, np.uint8), "carpet")
    sdas = tmp_path / "sdas"
    _constant_folder(sdas / "carpet", (0, 0, 0))
    _constant_folder(sdas / "bottle", (255, 255, 255))
    factors = []
    for s in _generate("realnet", {"sdas_path": str(sdas)}, data, count=30):
        inside = s.image[s.mask].astype(float)
        assert np.ptp(inside) <= 1
        factors.append(1 - inside.mean() / 200)
    assert min(factors) >= 0.5 - 0.01 and max(factors) <= 1.0
    assert min(factors) < 0.6 and max(factors) > 0.9


def test_realnet_foreground_rules_and_the_asbench_preset(tmp_path):
    """pill: Otsu -> the bright half; bottle: inverted Otsu -> the dark half; textures: everything.
    ASBench's RealNet uses MemSeg's threshold 100, not reversed -> the dark half for pill as well."""
    image = _half_dark()
    bright = np.zeros((SIZE, SIZE), bool)
    bright[:, SIZE // 2:] = True
    assert np.array_equal(realnet_foreground(image, foreground_rule("mvtec", "pill")), bright)
    assert np.array_equal(realnet_foreground(image, foreground_rule("mvtec", "bottle")), ~bright)
    assert realnet_foreground(image, foreground_rule("mvtec", "carpet")).all()
    sdas = _constant_folder(tmp_path / "sdas", (0, 0, 0))
    pill = _category(tmp_path, image, "pill")
    for preset, allowed in (("official", bright), ("asbench", ~bright)):
        method = registry.load("methods", "realnet")({"sdas_path": str(sdas), "preset": preset})
        rng = np.random.default_rng(0)
        union = np.zeros_like(bright)
        for _ in range(15):
            _, mask = method.synthesise(image, pill, rng)
            assert not (mask & ~allowed).any(), preset
            union |= mask
        assert union.any()


# --------------------------------------------------------------------------------------------- #
# Folders: the demo stand-in, and bad input through the real CLI


def test_demo_stand_in_textures(brick):
    folder = materialise_demo_textures()
    files = sorted(folder.glob("*.png"))
    assert len(files) >= 2 * len(STAND_IN_TEXTURES)
    assert not {"brick", "grass", "gravel"} & {f.stem.rsplit("_", 1)[0] for f in files}
    method = registry.load("methods", "memseg")({"texture_path": DEMO_TEXTURES})
    method.check()
    assert method.folders()[0].path == folder
    assert len(_generate("memseg", {"texture_path": DEMO_TEXTURES}, brick, count=2)) == 2


def test_driver_gives_up_with_one_line_when_the_foreground_is_empty(tmp_path):
    class Nothing(PerlinFamily):
        def synthesise(self, image, data, rng, file=""):
            return image, np.zeros(image.shape[:2], bool)

    data = _category(tmp_path, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="empty on category 'carpet'"):
        list(Nothing().generate(data, GenerationRequest("crack", 1, 0)))


def _bad_folder(tmp_path, make):
    folder = tmp_path / "textures"
    if make in ("empty", "unreadable"):
        folder.mkdir()
    if make == "unreadable":
        (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.mark.parametrize("name, option", [("memseg", "texture_path"), ("destseg", "texture_path"),
                                          ("glass", "texture_path"), ("realnet", "sdas_path")])
@pytest.mark.parametrize("make", ["missing", "empty", "unreadable"])
def test_bad_folder_stops_the_study_before_any_job(monkeypatch, capsys, tmp_path, name, option, make):
    folder = _bad_folder(tmp_path, make)
    protocol = write_protocol(tmp_path, methods=[{"name": name, "options": {option: str(folder)}}])
    code = run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "run", "--quiet")
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"options.{option}" in lines[0] and str(folder) in lines[0], lines[0]
    assert not (tmp_path / "run" / "artifacts").exists()


@pytest.mark.parametrize("name, needle", [("realnet", "github.com/cnulab/RealNet"), ("destseg", "dtd"),
                                          ("glass", "dtd")])
def test_required_folder_option_missing_says_where_to_get_it(monkeypatch, capsys, tmp_path, name, needle):
    protocol = write_protocol(tmp_path, methods=[{"name": name}])
    code = run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "run", "--quiet")
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0] and "methods[0].options" in lines[0], lines[0]


def test_folder_options_expand_environment_variables(monkeypatch, capsys, tmp_path, textures):
    """Shipped protocols write `texture_path: ${DTD_ROOT}/images`; an unset variable is one line naming it."""
    monkeypatch.setenv("ACBENCH_TEST_DTD", str(textures.parent))
    method = registry.load("methods", "destseg")({"texture_path": "${ACBENCH_TEST_DTD}/images"})
    assert method.options.texture_path == textures
    monkeypatch.delenv("ACBENCH_TEST_DTD")
    protocol = write_protocol(tmp_path, methods=[{"name": "glass", "options": {"texture_path": "${ACBENCH_TEST_DTD}"}}])
    assert run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "run", "--quiet") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "options.texture_path" in lines[0] and "${ACBENCH_TEST_DTD}" in lines[0], lines


def test_glass_combines_two_noises_as_union_intersection_or_the_first(monkeypatch):
    """perlin.py::perlin_mask: union, intersection or noise 1 alone, each with probability 1/3. The two
    noises are recomputed from the same seed to classify each draw."""
    from acbench_methods.classic import glass

    kinds = {"union": 0, "intersection": 0, "first": 0}
    for seed in range(150):
        rng = np.random.default_rng(seed)
        first, second = (glass.perlin_mask((32, 32), rng, glass.SCALE_EXPONENTS) for _ in range(2))
        combined = glass.dual_perlin_mask((32, 32), np.random.default_rng(seed))
        if np.array_equal(first, second):
            continue
        matches = [k for k, m in (("union", first | second), ("intersection", first & second), ("first", first))
                   if np.array_equal(combined, m)]
        assert matches, "neither union, intersection nor the first noise"
        if len(matches) == 1:
            kinds[matches[0]] += 1
    total = sum(kinds.values())
    assert total > 60
    for kind, n in kinds.items():
        assert 0.2 < n / total < 0.47, (kind, kinds)
