"""The `released` method and `acbench import`: pairs read in numeric order, every bad pair named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from acbench import registry
from acbench.cli import app
from acbench.data.category import CategoryData
from acbench.errors import UserError
from acbench.protocol import parse_protocol
from acbench.synthesis import GenerationRequest, SyntheticSet

N_PAIRS = 12  # more than 10, so a text sort ('10' < '2') would be caught
SIZE = 64


def pair_arrays(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair i: a flat colour that encodes i, and a 12x12 square whose column encodes i."""
    image = np.full((SIZE, SIZE, 3), (10 + 18 * i, 200 - 10 * i, 90), np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[20:32, 2 + 4 * i : 14 + 4 * i] = True
    return image, mask


def write_jpeg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    Image.fromarray(array).save(path, quality=75)  # as released: PIL's JPEG at quality 75


def write_anomalydiffusion_fixture(root: Path, categories=("bottle", "wood"), types=("crack", "hole")) -> Path:
    """A tiny copy of the released AnomalyDiffusion layout: generated_dataset/<cat>/<type>/{image,mask}/<i>.jpg."""
    base = root / "generated_dataset"
    for category in categories:
        for atype in types:
            for i in range(N_PAIRS):
                image, mask = pair_arrays(i)
                write_jpeg(base / category / atype / "image" / f"{i}.jpg", image)
                write_jpeg(base / category / atype / "mask" / f"{i}.jpg", mask)
                write_jpeg(base / category / atype / "ori" / f"{i}.jpg", image)  # ignored folder
    return base


def category(name: str = "bottle", image_size: int | None = None) -> CategoryData:
    return CategoryData("mvtec", name, Path("."), [], {}, [], {}, image_size=image_size)


def released(path: Path, **options):
    return registry.load("methods", "released")({"path": str(path), **options})


def decoded_index(sample) -> int:
    """Which pair a sample is, from its mask position (robust to JPEG noise)."""
    cols = np.nonzero(sample.mask.any(axis=0))[0]
    return int(round((cols.min() - 2) / 4))


def test_pairs_in_numeric_order_matching_their_masks(tmp_path):
    source = write_anomalydiffusion_fixture(tmp_path)
    samples = list(released(tmp_path).generate(category(), GenerationRequest("crack", 11, seed=0)))
    assert [decoded_index(s) for s in samples] == list(range(11))
    for i, sample in enumerate(samples):
        image, mask = pair_arrays(i)
        assert np.abs(sample.image.astype(int) - image).max() <= 6  # JPEG q75 of a flat colour
        assert (sample.mask != mask).mean() < 0.01
        assert sample.anomaly_type == "crack"
    # `path` may be the generated_dataset folder itself or its parent
    again = list(released(source).generate(category(), GenerationRequest("crack", 11, seed=0)))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(samples, again, strict=True))


def test_fewer_pairs_than_requested_uses_all_and_records_it(tmp_path):
    write_anomalydiffusion_fixture(tmp_path)
    method = released(tmp_path)
    samples = list(method.generate(category("wood"), GenerationRequest("hole", 20, seed=0)))
    assert len(samples) == N_PAIRS
    assert method.provenance()["shortfall"] == {"wood/hole": 20 - N_PAIRS}


def test_resized_to_the_study_image_size(tmp_path):
    write_anomalydiffusion_fixture(tmp_path)
    samples = list(released(tmp_path).generate(category(image_size=32), GenerationRequest("crack", 2, seed=0)))
    assert samples[0].image.shape == (32, 32, 3) and samples[0].mask.shape == (32, 32)
    assert samples[1].mask.any()


def break_pairs(base: Path) -> None:
    folder = base / "bottle" / "crack"
    (folder / "mask" / "3.jpg").unlink()                                             # mask missing
    write_jpeg(folder / "mask" / "5.jpg", np.zeros((SIZE, SIZE), bool))                # empty mask
    (folder / "image" / "7.jpg").write_bytes(b"not a jpeg")                            # corrupt image
    write_jpeg(folder / "mask" / "9.jpg", np.ones((SIZE // 2, SIZE // 2), bool))       # size mismatch
    write_jpeg(folder / "mask" / "20.jpg", np.ones((SIZE, SIZE), bool))                # image missing


def test_every_bad_pair_is_named(tmp_path):
    break_pairs(write_anomalydiffusion_fixture(tmp_path))
    with pytest.raises(UserError) as info:
        list(released(tmp_path).generate(category(), GenerationRequest("crack", 4, seed=0)))
    message = str(info.value)
    assert "\n" not in message and "5 bad pair(s)" in message
    for expected in ("crack/3 (mask missing)", "crack/5 (empty mask)", "crack/7 (unreadable",
                     "crack/9 (size mismatch", "crack/20 (image missing)"):
        assert expected in message


def test_bad_pairs_skipped_on_request(tmp_path):
    break_pairs(write_anomalydiffusion_fixture(tmp_path))
    samples = list(released(tmp_path, on_bad="skip").generate(category(), GenerationRequest("crack", 50, seed=0)))
    assert [decoded_index(s) for s in samples] == [0, 1, 2, 4, 6, 8, 10, 11]


def test_missing_type_or_path_is_a_user_error(tmp_path):
    write_anomalydiffusion_fixture(tmp_path)
    with pytest.raises(UserError, match="no pairs of type 'scratch'"):
        list(released(tmp_path).generate(category(), GenerationRequest("scratch", 2, seed=0)))
    protocol = {"name": "t", "dataset": {"kind": "demo"},
                "methods": [{"name": "released", "options": {"path": str(tmp_path), "layout": "stylegan"}}]}
    with pytest.raises(UserError, match=r"methods\[0\]\.options\.layout: Input should be 'anomalydiffusion'"):
        parse_protocol(protocol)
    with pytest.raises(UserError, match="path .*missing does not exist"):
        list(released(tmp_path / "missing").generate(category(), GenerationRequest("crack", 2, seed=0)))


def test_import_converts_once_and_reads_back_identically(tmp_path):
    write_anomalydiffusion_fixture(tmp_path / "src")
    result = CliRunner().invoke(app, ["import", str(tmp_path / "src"), str(tmp_path / "out"), "--category", "wood"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "bottle").exists()
    synthetic = SyntheticSet(tmp_path / "out" / "wood")
    assert len(synthetic) == 2 * N_PAIRS and synthetic.anomaly_types == ["crack", "hole"]
    from_import = list(released(tmp_path / "out", layout="synthetic-set").generate(
        category("wood"), GenerationRequest("hole", 5, seed=0)))
    original = list(released(tmp_path / "src").generate(category("wood"), GenerationRequest("hole", 5, seed=0)))
    for a, b in zip(from_import, original, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_import_cli_reports_bad_pairs_in_one_line(tmp_path):
    from acbench.cli import main

    break_pairs(write_anomalydiffusion_fixture(tmp_path / "src"))
    import sys

    argv = sys.argv
    sys.argv = ["acbench", "import", str(tmp_path / "src"), str(tmp_path / "out")]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = argv
    assert exit_info.value.code == 2
    assert not (tmp_path / "out" / "bottle" / "index.csv").exists()
