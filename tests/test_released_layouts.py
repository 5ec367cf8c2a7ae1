"""The `seas` and `dfmgan` layouts of `released`: miniature folders with the real releases' file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acbench import registry
from acbench.data.category import CategoryData
from acbench.errors import UserError
from acbench.protocol import parse_protocol
from acbench.synthesis import GenerationRequest, SyntheticSet
from acbench_methods.released import import_released

N_PAIRS = 12  # more than 10: a text sort of 0..11 ('10' < '2') would be caught
SIZE = 48


def pair_arrays(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair i: a flat colour that encodes i, and a 10x8 defect whose column encodes i."""
    image = np.full((SIZE, SIZE, 3), (10 + 18 * i, 200 - 10 * i, 90), np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[20:30, 2 + 3 * i : 10 + 3 * i] = True
    return image, mask


def save_png(path: Path, array: np.ndarray, rgb_mask: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
        if rgb_mask:  # DFMGAN writes its mask as a 3-channel image
            array = np.repeat(array[..., None], 3, axis=2)
    Image.fromarray(array).save(path)


def write_seas(root: Path, categories=("bottle", "wood"), types=("broken_large", "hole")) -> Path:
    """SeaS release: Generated_Anomaly_Images/mvtec_anomaly_detection/<cat>/<type>/{image,mask}/000.png."""
    base = root / "Generated_Anomaly_Images" / "mvtec_anomaly_detection"
    for category in categories:
        for atype in types:
            for i in range(N_PAIRS):
                image, mask = pair_arrays(i)
                save_png(base / category / atype / "image" / f"{i:03}.png", image)
                save_png(base / category / atype / "mask" / f"{i:03}.png", mask)
    return base


def write_dfmgan(root: Path, categories=("hazelnut",), types=("hole", "crack")) -> Path:
    """DFMGAN generate.py output, one --output folder per (category, type): <i>_img.png, <i>_mask.png."""
    for category in categories:
        for atype in types:
            for i in range(N_PAIRS):
                image, mask = pair_arrays(i)
                save_png(root / category / atype / f"{i}_img.png", image)
                save_png(root / category / atype / f"{i}_mask.png", mask, rgb_mask=True)
    return root


def category(name: str, image_size: int | None = None) -> CategoryData:
    return CategoryData("mvtec", name, Path("."), [], {}, [], {}, image_size=image_size)


def released(path: Path, layout: str, **options):
    return registry.load("methods", "released")({"path": str(path), "layout": layout, **options})


def decoded_index(sample) -> int:
    cols = np.nonzero(sample.mask.any(axis=0))[0]
    return int(round((cols.min() - 2) / 3))


@pytest.mark.parametrize("layout", ["seas", "dfmgan"])
def test_pairs_are_read_in_numeric_order_with_their_masks(tmp_path, layout):
    if layout == "seas":
        base = write_seas(tmp_path)
        paths, cat, atype = [tmp_path, tmp_path / "Generated_Anomaly_Images", base], "wood", "broken_large"
    else:
        paths, cat, atype = [write_dfmgan(tmp_path)], "hazelnut", "hole"
    for path in paths:  # the release root, or any folder down to the per-dataset one
        samples = list(released(path, layout).generate(category(cat), GenerationRequest(atype, 11, seed=0)))
        assert [decoded_index(s) for s in samples] == list(range(11))
        for i, sample in enumerate(samples):
            image, mask = pair_arrays(i)
            assert np.array_equal(sample.image, image) and np.array_equal(sample.mask, mask)  # PNG: lossless
            assert sample.anomaly_type == atype


def test_types_and_categories_of_both_layouts(tmp_path):
    from acbench_methods.released.layouts import list_categories, list_types

    write_seas(tmp_path / "seas")
    write_dfmgan(tmp_path / "dfmgan")
    (tmp_path / "dfmgan" / "hazelnut" / "notes").mkdir()  # a folder without generated files is no type
    assert list_categories(tmp_path / "seas", "seas") == ["bottle", "wood"]
    assert list_types(tmp_path / "seas", "seas", "bottle") == ["broken_large", "hole"]
    assert list_types(tmp_path / "dfmgan", "dfmgan", "hazelnut") == ["crack", "hole"]
    # the anomalydiffusion reader does not mistake a DFMGAN folder for its own layout
    assert list_types(tmp_path / "dfmgan", "anomalydiffusion", "hazelnut") == []


def test_a_seas_root_with_several_datasets_must_be_narrowed(tmp_path):
    write_seas(tmp_path)
    (tmp_path / "Generated_Anomaly_Images" / "visa" / "candle").mkdir(parents=True)
    with pytest.raises(UserError, match="2 datasets .*set options.path to one of them"):
        list(released(tmp_path, "seas").generate(category("wood"), GenerationRequest("hole", 2, seed=0)))


def test_every_bad_seas_pair_is_named(tmp_path):
    folder = write_seas(tmp_path) / "bottle" / "hole"
    (folder / "mask" / "003.png").unlink()
    save_png(folder / "mask" / "005.png", np.zeros((SIZE, SIZE), bool))
    (folder / "image" / "007.png").write_bytes(b"not a png")
    save_png(folder / "mask" / "009.png", np.ones((SIZE // 2, SIZE // 2), bool))
    with pytest.raises(UserError) as info:
        list(released(tmp_path, "seas").generate(category("bottle"), GenerationRequest("hole", 4, seed=0)))
    message = str(info.value)
    assert "\n" not in message and "4 bad pair(s)" in message
    for expected in ("hole/003 (mask missing)", "hole/005 (empty mask)", "hole/007 (unreadable",
                     "hole/009 (size mismatch"):
        assert expected in message
    kept = list(released(tmp_path, "seas", on_bad="skip").generate(category("bottle"),
                                                                    GenerationRequest("hole", 50, seed=0)))
    assert [decoded_index(s) for s in kept] == [0, 1, 2, 4, 6, 8, 10, 11]


def test_every_bad_dfmgan_pair_is_named(tmp_path):
    folder = write_dfmgan(tmp_path) / "hazelnut" / "crack"
    (folder / "2_mask.png").unlink()                                       # mask missing
    (folder / "4_img.png").unlink()                                        # image missing
    save_png(folder / "6_mask.png", np.zeros((SIZE, SIZE), bool), True)   # the generator drew no defect
    (folder / "10_img.png").write_bytes(b"\x89PNG broken")                 # corrupt image
    with pytest.raises(UserError) as info:
        list(released(tmp_path, "dfmgan").generate(category("hazelnut"), GenerationRequest("crack", 3, seed=0)))
    message = str(info.value)
    assert "\n" not in message and "4 bad pair(s)" in message
    for expected in ("crack/2 (mask missing)", "crack/4 (image missing)", "crack/6 (empty mask)",
                     "crack/10 (unreadable"):
        assert expected in message


def test_rows_carry_the_method_name(tmp_path):
    write_seas(tmp_path / "s")
    write_dfmgan(tmp_path / "d")
    protocol = parse_protocol({"name": "t", "dataset": {"kind": "demo"}, "methods": [
        {"name": "released", "options": {"path": str(tmp_path / "s"), "layout": "seas"}},
        {"name": "released", "options": {"path": str(tmp_path / "d"), "layout": "dfmgan"}},
        {"name": "released", "options": {"path": str(tmp_path / "s"), "layout": "seas"}, "variant": "seas-512"},
        {"name": "released", "options": {"path": str(tmp_path / "s")}},
    ]})
    assert [m.label for m in protocol.methods] == ["released/seas", "released/dfmgan", "released/seas-512",
                                                   "released"]
    with pytest.raises(UserError, match=r"methods\[1\].*'released/seas' repeats"):
        parse_protocol({"name": "t", "dataset": {"kind": "demo"}, "methods": [
            {"name": "released", "options": {"path": str(tmp_path / "s"), "layout": "seas"}},
            {"name": "released", "options": {"path": str(tmp_path / "s"), "layout": "seas"}}]})


def test_import_names_the_method_in_the_index(tmp_path):
    write_dfmgan(tmp_path / "src")
    written = import_released(tmp_path / "src", tmp_path / "out", "dfmgan")
    assert written == {"hazelnut": 2 * N_PAIRS}
    synthetic = SyntheticSet(tmp_path / "out" / "hazelnut")
    assert {r.method for r in synthetic.records} == {"released/dfmgan"}
    assert synthetic.anomaly_types == ["crack", "hole"]


def test_preflight_check_names_a_folder_of_another_layout(tmp_path):
    write_dfmgan(tmp_path / "d")
    write_seas(tmp_path / "s")
    released(tmp_path / "d", "dfmgan").check()
    released(tmp_path / "s", "seas").check()
    with pytest.raises(UserError, match=r"options.path: .*no <category>/<type> folders of the 'seas' layout"):
        released(tmp_path / "d", "seas").check()
    with pytest.raises(UserError, match="'dfmgan' layout"):
        released(tmp_path / "s", "dfmgan").check()
