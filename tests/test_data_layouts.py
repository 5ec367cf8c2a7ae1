"""Each released dataset layout, as a miniature built here with the release's names, nesting, extensions,
split files and mask encodings: categories, types, counts, the literature split, mask pairing,
`data check`, `kind: auto`, and the one-line user errors."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acbench.data import check_layout, dataset_root, open_categories, open_category, open_layout
from acbench.data.detect import detect_kind
from acbench.data.layout import natural_key
from acbench.data.mtd import split_normals
from acbench.data.mvtec import load_category, resolve_categories
from acbench.errors import UserError
from acbench.protocol import DatasetConfig, Protocol, SplitConfig, parse_dataset
from engine_helpers import run_cli

W, H = 40, 30  # not square: a transposed mask would not pass as the right size
_rng = np.random.default_rng(0)


def _image(path: Path, size: tuple[int, int] = (W, H), grey: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
    Image.fromarray(_rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, value: int = 255, empty: bool = False) -> Path:
    """A mask with one rectangle of `value` (255 for 0/255 masks, a class id for VisA)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((H, W), np.uint8)
    if not empty:
        arr[5:15, 8:20] = value
    Image.fromarray(arr).save(path)
    return path


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


# --- miniatures of each release ----------------------------------------------------------------------------

VISA_LABELS = {"candle": ["chunk of wax missing", "weird candle wick", "chunk of wax missing",
                          "chunk of wax missing,weird candle wick", "chunk of wax missing", "weird candle wick",
                          "chunk of wax missing", "chunk of wax missing, weird candle wick", "chunk of wax missing",
                          "weird candle wick", "chunk of wax missing", "Chunk of Wax Missing,Weird Candle Wick"],
               "pcb1": ["scratch"] * 4 + ["melt"] * 3}


def build_visa(root: Path) -> dict:
    split_rows = []
    for cat, labels in VISA_LABELS.items():
        anno_rows = []
        for i in range(9):  # 6 train + 3 test normals; names not zero-padded like the release's 4-digit ones
            image = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
            _image(root / image)
            split_rows.append([cat, "train" if i < 6 else "test", "normal", image, ""])
            anno_rows.append([image, "normal", ""])
        for i, label in enumerate(labels):
            image, mask = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG", f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
            _image(root / image)
            _mask(root / mask, value=1 + i % 3)  # class ids, not 0/255
            split_rows.append([cat, "test", "anomaly", image, mask])
            anno_rows.append([image, label, mask])
        _csv(root / cat / "image_anno.csv", ["image", "label", "mask"], anno_rows)
    _csv(root / "split_csv" / "1cls.csv", ["object", "split", "label", "image", "mask"], split_rows)
    return {"kind": "visa", "categories": ["candle", "pcb1"], "normal": (6, 3),
            "types": {"candle": {"chunk_of_wax_missing": 6, "weird_candle_wick": 3, "combined": 3},
                      "pcb1": {"scratch": 4, "melt": 3}}}


def build_mpdd(root: Path) -> dict:
    types = {"bracket_black": {"hole": 4, "scratches": 3}, "tubes": {"flattening": 5}}
    for cat, defects in types.items():
        for i in range(5):
            _image(root / cat / "train" / "good" / f"{i:03d}.png")
        for i in range(2):
            _image(root / cat / "test" / "good" / f"{i:03d}.png")
        for defect, n in defects.items():
            for i in range(n):
                _image(root / cat / "test" / defect / f"{i:03d}.png")
                _mask(root / cat / "ground_truth" / defect / f"{i:03d}_mask.png")
    return {"kind": "mpdd", "auto": "mvtec", "categories": list(types), "normal": (5, 2), "types": types}


def build_btad(root: Path) -> dict:
    counts = {"01": 5, "02": 4}
    for product, suffix in (("01", ".bmp"), ("02", ".png")):  # formats are mixed across products
        for i in range(4):
            _image(root / product / "train" / "ok" / f"{i:04d}{suffix}")
        for i in range(2):
            _image(root / product / "test" / "ok" / f"{i:04d}{suffix}")
        for i in range(counts[product]):
            _image(root / product / "test" / "ko" / f"{i:04d}{suffix}")
            _mask(root / product / "ground_truth" / "ko" / f"{i:04d}.png")
    return {"kind": "btad", "categories": ["01", "02"], "normal": (4, 2),
            "types": {p: {"ko": n} for p, n in counts.items()}}


MTD_TYPES = {"Blowhole": 4, "Crack": 3, "Uneven": 6}


def build_mtd(root: Path) -> dict:
    for i in range(10):
        _image(root / "MT_Free" / "Imgs" / f"exp{1 + i % 3}_num_{1000 + i}.jpg", grey=True)
        _mask(root / "MT_Free" / "Imgs" / f"exp{1 + i % 3}_num_{1000 + i}.png", empty=True)
    for folder, n in MTD_TYPES.items():
        for i in range(n):
            stem = f"exp{i % 2}_num_{108719 + 7 * i}"
            _image(root / f"MT_{folder}" / "Imgs" / f"{stem}.jpg", grey=True)
            _mask(root / f"MT_{folder}" / "Imgs" / f"{stem}.png")
    (root / "README.md").write_text("Magnetic tile defect datasets\n")
    return {"kind": "mtd", "categories": ["magnetic_tile"], "normal": (8, 2),
            "types": {"magnetic_tile": {k.lower(): n for k, n in MTD_TYPES.items()}}}


def _xyz(path: Path) -> None:
    """An MVTec 3D-AD point map (float TIFF), which the RGB reader must ignore."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((H, W), np.float32)).save(path)


def build_mvtec3d(root: Path) -> dict:
    types = {"bagel": {"crack": 4, "combined": 3}, "rope": {"cut": 3}}
    for cat, defects in types.items():
        for split, n in (("train", 5), ("validation", 2)):
            for i in range(n):
                _image(root / cat / split / "good" / "rgb" / f"{i:03d}.png")
                _xyz(root / cat / split / "good" / "xyz" / f"{i:03d}.tiff")
        for defect, n in {"good": 2, **defects}.items():
            for i in range(n):
                _image(root / cat / "test" / defect / "rgb" / f"{i:03d}.png")
                _mask(root / cat / "test" / defect / "gt" / f"{i:03d}.png", empty=defect == "good")
                _xyz(root / cat / "test" / defect / "xyz" / f"{i:03d}.tiff")
    return {"kind": "mvtec3d", "categories": list(types), "normal": (5, 2), "types": types}


def build_mvtec_ad2(root: Path) -> dict:
    counts = {"can": 6, "vial": 4}
    for cat, n in counts.items():
        for i in range(5):
            _image(root / cat / "train" / "good" / f"{i:03d}_regular.png")
        _image(root / cat / "validation" / "good" / "000_regular.png")
        for i in range(2):
            _image(root / cat / "test_public" / "good" / f"{i:03d}_regular.png")
        for i in range(n):
            _image(root / cat / "test_public" / "bad" / f"{i:03d}_regular.png")
            _mask(root / cat / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png")
        _image(root / cat / "test_private" / "000_regular.png")  # no ground truth: not read
    return {"kind": "mvtec_ad2", "categories": list(counts), "normal": (5, 2),
            "types": {c: {"bad": n} for c, n in counts.items()}}


REALIAD_SAMPLES = {"AK": 4, "HS": 3}  # anomalous samples per type, 5 views each


def build_realiad(root: Path, anomalib_form: bool = False) -> dict:
    """`anomalib_form`: JSON paths relative to the category folder and anomaly_class "NG" (no type code)."""
    images, cat = root / "realiad_256", "audiojack"

    def shot(label: str, sample: int, view: int, folder: str) -> str:
        rel = f"{cat}/{folder}/S{sample:04d}/{cat}_{sample:04d}_{label}_C{view}_2023092208{sample:02d}{view:02d}.jpg"
        _image(images / rel)
        return rel

    train, test = [], []
    for sample in range(1, 6):  # 3 training samples, 2 held-out normal samples
        for view in range(1, 6):
            entry = {"category": cat, "anomaly_class": "OK", "image_path": shot("OK", sample, view, "OK"),
                     "mask_path": None}
            (train if sample <= 3 else test).append(entry)
    sample = 10
    for atype, n in REALIAD_SAMPLES.items():
        for _ in range(n):
            sample += 1
            for view in range(1, 6):
                rel = shot("NG", sample, view, f"NG/{atype}")
                mask = rel.replace(".jpg", "_mask.png")
                _mask(images / mask)
                test.append({"category": cat, "anomaly_class": "NG" if anomalib_form else atype, "image_path": rel,
                             "mask_path": mask})
    if anomalib_form:
        for entry in train + test:
            for key in ("image_path", "mask_path"):
                entry[key] = entry[key] and entry[key].removeprefix(f"{cat}/")
    path = root / "realiad_jsons" / "realiad_jsons" / f"{cat}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"meta": {"prefix": "", "normal_class": "OK", "pre_transform": None},
                                "train": train, "test": test}))
    return {"kind": "realiad", "categories": [cat], "normal": (15, 10),
            "types": {cat: {t: 5 * n for t, n in REALIAD_SAMPLES.items()}}}


BUILDERS: dict[str, Callable[[Path], dict]] = {
    "visa": build_visa, "mpdd": build_mpdd, "btad": build_btad, "mtd": build_mtd, "mvtec3d": build_mvtec3d,
    "mvtec_ad2": build_mvtec_ad2, "realiad": build_realiad,
}


@pytest.fixture(params=sorted(BUILDERS))
def release(request, tmp_path):
    root = tmp_path / request.param
    root.mkdir()
    return root, BUILDERS[request.param](root)


def _config(root: Path, kind: str = "auto", **options) -> DatasetConfig:
    return DatasetConfig(kind=kind, root=root, **options)


# --- readers ------------------------------------------------------------------------------------------------


def test_auto_recognises_every_release(release):
    root, spec = release
    assert detect_kind(root) == spec.get("auto", spec["kind"])
    assert open_layout(_config(root)).kind == spec.get("auto", spec["kind"])


def test_categories_types_and_counts(release):
    root, spec = release
    categories = open_categories(_config(root, spec["kind"]))
    assert [c.category for c in categories] == spec["categories"]
    for data in categories:
        expected = spec["types"][data.category]
        assert data.dataset == spec["kind"]
        assert (len(data.normal_train), len(data.eval_normal)) == spec["normal"]
        assert data.anomaly_types == sorted(expected)
        for atype, n in expected.items():
            assert len(data.synthesis.get(atype, [])) + len(data.eval_anomalies[atype]) == n
        assert not set(data.normal_train) & set(data.eval_normal)


def test_split_is_the_literatures(release):
    root, spec = release
    for data in open_categories(_config(root, spec["kind"])):
        for atype, n in spec["types"][data.category].items():
            synth, held = data.synthesis.get(atype, []), data.eval_anomalies[atype]
            names = [e.image_path for e in synth + held]
            if spec["kind"] == "realiad":  # 5 views per sample: the first third of the samples
                assert len(synth) == 5 * ((n // 5) // 3)
                assert not {e.image_path.parent.name for e in synth} & {e.image_path.parent.name for e in held}
            else:
                assert len(synth) == n // 3
            assert len(set(names)) == n  # none on both sides, none lost
            key = [natural_key(p) for p in names]
            assert key == sorted(key)  # natural order: the synthesis side is the start of the sorted list


def test_every_mask_pairs_with_its_image(release):
    root, spec = release
    for data in open_categories(_config(root, spec["kind"])):
        for examples in list(data.synthesis.values()) + list(data.eval_anomalies.values()):
            for example in examples:
                image, mask = example.image(), example.mask()
                assert image.shape[:2] == mask.shape == (H, W)
                assert mask.sum() == 10 * 12  # the rectangle: class-id masks (VisA) are binarised too
                assert example.anomaly_type in data.anomaly_types


def test_engine_entry_points_use_the_protocols_reader(release):
    """The harness reads categories through `dataset_root` + `acbench.data.mvtec`: same data, any layout."""
    root, spec = release
    config = _config(root)
    located = dataset_root(config)
    assert resolve_categories(located, "all") == spec["categories"]
    first = spec["categories"][0]
    via_engine = load_category(located, first, config.split, dataset="auto")
    direct = open_category(config, first)
    assert via_engine.dataset == spec.get("auto", spec["kind"])
    assert via_engine.synthesis == direct.synthesis and via_engine.eval_anomalies == direct.eval_anomalies
    plain = load_category(root, first, SplitConfig())  # `acbench generate --dataset ROOT`: recognised too
    assert plain.synthesis == direct.synthesis and plain.dataset == spec.get("auto", spec["kind"])


def test_data_check_names_each_planted_problem(release):
    root, spec = release
    kind = spec["kind"]
    assert check_layout(root, kind) == (kind, [])
    layout = open_layout(_config(root, kind))
    listing = layout.list(spec["categories"][0])
    found = [f for items in listing.defects.values() for f in items]
    missing, wrong_size, unreadable = found[0].mask, found[1].mask, listing.normal_train[0]
    missing.unlink()
    Image.fromarray(np.zeros((H // 2, W // 2), np.uint8)).save(wrong_size)
    unreadable.write_bytes(b"not an image")
    _, problems = check_layout(root, kind)
    assert len(problems) == 3, problems
    assert any(p.startswith(f"{unreadable}: unreadable or corrupt image") for p in problems)
    assert any(p.startswith(f"{found[0].image}: defect image without mask (expected {missing})") for p in problems)
    assert f"{wrong_size}: mask size {W // 2}x{H // 2} differs from image size {W}x{H}" in problems
    with pytest.raises(UserError, match="defect image without mask"):
        open_category(_config(root, kind), spec["categories"][0])


def test_data_check_command(release, monkeypatch, capsys):
    root, spec = release
    assert run_cli(monkeypatch, "data", "check", root) == 0
    assert f"recognised the {spec.get('auto', spec['kind'])} layout" in capsys.readouterr().out
    assert run_cli(monkeypatch, "data", "check", root, "--kind", spec["kind"]) == 0


# --- user errors --------------------------------------------------------------------------------------------


def test_auto_refuses_an_unknown_folder(tmp_path, monkeypatch, capsys):
    _image(tmp_path / "photos" / "holiday" / "001.jpg")
    with pytest.raises(UserError, match=r"photos: no known dataset layout .*set 'dataset.kind'") as exc:
        open_layout(_config(tmp_path / "photos"))
    assert "\n" not in str(exc.value)
    assert run_cli(monkeypatch, "data", "check", tmp_path / "photos") == 2
    assert "no known dataset layout" in capsys.readouterr().err


def test_wrong_kind_for_the_folder_is_one_line(tmp_path, monkeypatch, capsys):
    build_btad(tmp_path)
    with pytest.raises(UserError, match=r"no category in the MVTec 3D-AD .* layout; this folder is in the btad "
                                        r"layout: set 'dataset.kind: btad'"):
        open_categories(_config(tmp_path, "mvtec3d"))
    assert run_cli(monkeypatch, "data", "check", tmp_path, "--kind", "realiad") == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "set 'dataset.kind: btad'" in out
    from engine_helpers import write_protocol

    protocol = write_protocol(tmp_path, dataset={"kind": "visa", "root": str(tmp_path), "categories": ["01"]})
    assert run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "run", "--quiet") == 2
    err = capsys.readouterr().err
    assert "no category in the VisA" in err and "set 'dataset.kind: btad'" in err
    assert not (tmp_path / "run" / "artifacts").exists()  # refused before any job


@pytest.mark.parametrize("kind", ["visa", "realiad"])
def test_missing_split_file_names_the_file_and_the_fix(tmp_path, kind, monkeypatch, capsys):
    BUILDERS[kind](tmp_path)
    split = next((tmp_path / ("split_csv" if kind == "visa" else "realiad_jsons")).rglob("*.*"))
    split.unlink()
    fix = "copy split_csv/ from github.com/amazon-science/spot-diff" if kind == "visa" else \
        "unpack realiad_jsons.zip"
    with pytest.raises(UserError, match=f"{split}: missing split file; {fix}"):
        open_categories(_config(tmp_path))
    assert run_cli(monkeypatch, "data", "check", tmp_path) == 2
    out = capsys.readouterr().out
    assert out.count("missing split file") == 1  # once, not once per category


def test_visa_without_annotations(tmp_path):
    build_visa(tmp_path)
    (tmp_path / "candle" / "image_anno.csv").unlink()
    with pytest.raises(UserError, match=r"candle/image_anno.csv: missing; .* set 'dataset.types: single'"):
        open_category(_config(tmp_path), "candle")
    single = open_category(_config(tmp_path, types="single"), "candle")  # not needed for one type
    assert single.anomaly_types == ["bad"] and len(single.synthesis["bad"]) == 12 // 3


def test_visa_types_single_and_the_exported_layout(tmp_path):
    build_visa(tmp_path / "raw")
    single = open_category(_config(tmp_path / "raw", "visa", types="single"), "pcb1")
    assert single.anomaly_types == ["bad"] and len(single.synthesis["bad"]) == 7 // 3
    # the MVTec-style export (anomalib's visa_pytorch, 1cls) is still read as kind visa
    out = tmp_path / "visa_pytorch" / "pcb1"
    for i in range(3):
        _image(out / "train" / "good" / f"{i:04d}.JPG")
        _image(out / "test" / "good" / f"{i:04d}.JPG")
        _image(out / "test" / "bad" / f"{i:03d}.JPG")
        _mask(out / "ground_truth" / "bad" / f"{i:03d}.png")
    exported = open_category(_config(tmp_path / "visa_pytorch", "visa"), "pcb1")
    assert exported.anomaly_types == ["bad"] and len(exported.synthesis["bad"]) == 1


def test_visa_masks_are_binarised_copies(tmp_path):
    build_visa(tmp_path)
    data = open_category(_config(tmp_path), "pcb1")
    example = data.eval_anomalies["scratch"][0]
    raw = np.asarray(Image.open(tmp_path / "pcb1" / "Data" / "Masks" / "Anomaly" / f"{example.image_path.stem}.png"))
    assert 0 < raw.max() < 128  # a class id, which a 0/255 reader would read as empty
    binary = np.asarray(Image.open(example.mask_path))
    assert set(np.unique(binary)) == {0, 255} and np.array_equal(binary > 0, raw > 0)


def test_realiad_views_keep_samples_together(tmp_path):
    build_realiad(tmp_path)
    top = open_category(_config(tmp_path, views=["C1"]), "audiojack")
    assert (len(top.normal_train), len(top.eval_normal)) == (3, 2)
    assert {t: len(top.synthesis.get(t, [])) for t in REALIAD_SAMPLES} == {"AK": 1, "HS": 1}
    assert all("_C1_" in e.image_path.name for ex in top.eval_anomalies.values() for e in ex)
    assert top.text("AK") == "pit"  # the release's type codes, in words for text-conditioned methods
    two = open_category(_config(tmp_path, views=["C1", "C3"]), "audiojack")
    assert [e.image_path.parent.name for e in two.synthesis["AK"]] == ["S0011", "S0011"]


def test_realiad_paths_relative_to_the_category_folder(tmp_path):
    spec = build_realiad(tmp_path, anomalib_form=True)
    data = open_category(_config(tmp_path), "audiojack")
    assert {t: len(data.synthesis[t]) + len(data.eval_anomalies[t]) for t in data.anomaly_types} == \
        spec["types"]["audiojack"]


def test_mtd_normal_split_is_deterministic_and_a_fifth(tmp_path):
    names = [tmp_path / f"exp{i % 6}_num_{i}.jpg" for i in range(952)]
    train, test = split_normals(names)
    assert (len(train), len(test)) == (762, 190) and not set(train) & set(test)
    assert split_normals(list(reversed(names))) == (train, test)
    assert len({p.name.split("_")[0] for p in test}) == 6  # held-out images from every capture session


def test_layout_options_are_checked_against_the_kind():
    with pytest.raises(UserError, match=r"p.yaml: dataset: 'views' applies to kind realiad, not 'visa'"):
        parse_dataset({"kind": "visa", "root": "/d", "views": ["C1"]}, source="p.yaml")
    with pytest.raises(UserError, match=r"p.yaml: dataset.views\[0\]"):
        parse_dataset({"kind": "realiad", "root": "/d", "views": ["C9"]}, source="p.yaml")
    assert parse_dataset({"root": "/d"}).kind == "auto"
    assert parse_dataset({"kind": "realiad", "root": "/d", "resolution": 512}).resolution == "512"
    assert parse_dataset({"root": "/d", "types": "single", "views": ["C1"]}).types == "single"  # auto: any


def test_preflight_reads_the_layout(tmp_path):
    from acbench.engine.preflight import check_data

    build_mvtec_ad2(tmp_path)
    protocol = Protocol.model_validate({"name": "x", "dataset": {"root": str(tmp_path)},
                                        "methods": [{"name": "cutpaste"}]})
    check_data(protocol, ["can", "vial"])
    (tmp_path / "vial" / "test_public" / "ground_truth" / "bad" / "001_regular_mask.png").unlink()
    with pytest.raises(UserError, match=r"vial/test_public/bad/001_regular.png: defect image without mask"):
        check_data(protocol, ["can", "vial"])


def test_split_config_legacy_overlap_still_applies(tmp_path):
    build_btad(tmp_path)
    data = open_category(_config(tmp_path, split=SplitConfig(legacy_overlap=True)), "01")
    assert len(data.synthesis["ko"]) == 5 // 3 + 1 and len(data.eval_anomalies["ko"]) == 5 - 5 // 3


def test_a_study_runs_on_the_raw_visa_release(tmp_path, monkeypatch):
    """`acbench run` end to end on a raw VisA miniature (kind auto): the engine reads it unchanged."""
    from engine_helpers import results, write_protocol

    build_visa(tmp_path / "VisA")
    protocol = write_protocol(tmp_path, dataset={"root": str(tmp_path / "VisA"), "categories": ["pcb1"]})
    assert run_cli(monkeypatch, "run", protocol, "--out", tmp_path / "run", "--quiet", "--device", "cpu") == 0
    table = results(tmp_path / "run")
    assert {"melt", "scratch"} <= set(table["anomaly_type"])
    assert set(table["category"]) == {"pcb1"}


def test_unset_layout_options_leave_the_job_hashes_alone():
    """Studies planned before the layout options existed keep their job hashes (and so resume)."""
    dumped = DatasetConfig(kind="mvtec", root="/m").model_dump(mode="json")
    assert set(dumped) == {"kind", "root", "categories", "split", "image_size", "type_texts", "demo_seed"}
    assert DatasetConfig(root="/m", views=["C2"]).model_dump(mode="json")["views"] == ["C2"]


def test_data_check_flags_masks_read_as_empty(tmp_path):
    """A 0/1 mask where 0/255 is expected would reach detectors and metrics as an empty mask."""
    build_btad(tmp_path)
    zero_one = tmp_path / "02" / "ground_truth" / "ko" / "0003.png"
    _mask(zero_one, value=1)
    one_bit = tmp_path / "02" / "ground_truth" / "ko" / "0002.png"
    Image.open(one_bit).convert("1").save(one_bit)  # 1-bit masks read as 0/255: fine
    _, problems = check_layout(tmp_path, "btad")
    assert problems == [f"{zero_one}: mask is empty as read (largest value 1, anomalous pixels need >= 128); "
                        f"save defect pixels as 255"]
