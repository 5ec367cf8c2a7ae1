"""The literature split on names that are not zero-padded, in random order, and for types too small to split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acbench.data.mvtec import load_category
from acbench.engine import run_study
from acbench.protocol import SplitConfig, parse_protocol
from acbench.report.caveats import caveats
from acbench.report.load import prepare

SIDE = 32


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def plain_names(tmp_path_factory) -> Path:
    """MVTec layout: `crack` holds 1.png … 12.png (not zero-padded), `dent` only 2 images."""
    root = tmp_path_factory.mktemp("plain")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for i in range(count):
            _write(root / "tile" / split / "good" / f"{i}.png", rng.integers(0, 255, (SIDE, SIDE, 3), np.uint8))
    for defect, count in (("crack", 12), ("dent", 2)):
        for i in range(1, count + 1):
            _write(root / "tile" / "test" / defect / f"{i}.png", rng.integers(0, 255, (SIDE, SIDE, 3), np.uint8))
            mask = np.zeros((SIDE, SIDE), np.uint8)
            mask[8:16, 8:16] = 255
            _write(root / "tile" / "ground_truth" / defect / f"{i}_mask.png", mask)
    return root


def _names(examples) -> list[str]:
    return [e.image_path.stem for e in examples]


def test_synthesis_is_the_first_third_in_natural_order(plain_names):
    data = load_category(plain_names, "tile", SplitConfig())
    assert _names(data.synthesis["crack"]) == ["1", "2", "3", "4"]  # lexicographic order would give 1, 10, 11, 12
    assert _names(data.eval_anomalies["crack"]) == [str(i) for i in range(5, 13)]
    legacy = load_category(plain_names, "tile", SplitConfig(legacy_overlap=True))
    assert _names(legacy.synthesis["crack"]) == ["1", "2", "3", "4", "5"]
    assert _names(legacy.eval_anomalies["crack"])[0] == "5"  # the released code's overlap, on purpose


def test_random_order_is_a_seeded_partition(plain_names):
    def split(seed):
        data = load_category(plain_names, "tile", SplitConfig(order="random", seed=seed))
        return _names(data.synthesis["crack"]), _names(data.eval_anomalies["crack"])

    first, again, other = split(1), split(1), split(2)
    assert first == again
    assert len(first[0]) == 4 and sorted(first[0] + first[1], key=int) == [str(i) for i in range(1, 13)]
    assert first[0] != other[0]
    assert first[0] != ["1", "2", "3", "4"]  # a shuffle, not the sorted order


def test_a_type_too_small_to_split_is_evaluated_not_generated_and_reported(plain_names, tmp_path):
    data = load_category(plain_names, "tile", SplitConfig())
    assert "dent" not in data.synthesis and _names(data.eval_anomalies["dent"]) == ["1", "2"]
    protocol = parse_protocol({
        "name": "small", "dataset": {"kind": "mvtec", "root": str(plain_names), "categories": ["tile"]},
        "methods": [{"name": "cutpaste"}], "generation": {"per_type": 1}, "metrics": ["pair-stats"],
        "weights": "pretrained-or-random", "report": {"sample_grid": False}})
    result = run_study(protocol, out=tmp_path / "run", report=False)
    assert result.ok
    frame = result.results
    assert set(frame["anomaly_type"]) == {"", "crack"}  # nothing generated for dent
    assert set(frame["types_not_generated"]) == {"dent"}
    notes = dict(caveats(prepare(frame)))
    assert notes["types too small to split (evaluated, never generated)"] == "tile: dent"
