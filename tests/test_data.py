"""The MVTec-layout reader, the literature split, `data check`, and the demo dataset."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from PIL import Image

from acbench.data.demo import CATEGORIES, N_PER_DEFECT, N_TEST_GOOD, N_TRAIN, write_demo
from acbench.data.mvtec import check_dataset, load_category, resolve_categories
from acbench.errors import UserError
from acbench.protocol import SplitConfig


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_and_in_mvtec_layout(tmp_path, demo_root):
    write_demo(tmp_path / "again", seed=0)
    assert _digest(tmp_path / "again") == _digest(demo_root)
    assert check_dataset(demo_root) == []
    assert resolve_categories(demo_root, "all") == sorted(CATEGORIES)
    for cat, (_, _, defects) in CATEGORIES.items():
        data = load_category(demo_root, cat, SplitConfig())
        assert len(data.normal_train) == N_TRAIN and len(data.eval_normal) == N_TEST_GOOD
        assert data.anomaly_types == sorted(defects)
        for defect in defects:
            example = data.synthesis[defect][0]
            image, mask = example.image(), example.mask()
            assert image.shape == (128, 128, 3) and mask.shape == (128, 128) and 12 <= mask.sum() < 0.3 * mask.size


def test_demo_seed_changes_images(tmp_path, demo_root):
    write_demo(tmp_path / "s1", seed=1)
    other = np.asarray(Image.open(tmp_path / "s1" / "brick" / "train" / "good" / "000.png"))
    seed0 = np.asarray(Image.open(demo_root / "brick" / "train" / "good" / "000.png"))
    assert other.shape == seed0.shape == (128, 128, 3) and not np.array_equal(other, seed0)


@pytest.mark.parametrize("legacy", [False, True])
def test_split_is_disjoint_sorted_and_stable(demo_root, legacy):
    split = SplitConfig(legacy_overlap=legacy)
    first = load_category(demo_root, "gravel", split)
    second = load_category(demo_root, "gravel", split)
    k = N_PER_DEFECT // 3
    for defect, examples in first.synthesis.items():
        names = [e.image_path.name for e in examples]
        evaluation = [e.image_path.name for e in first.eval_anomalies[defect]]
        assert names == [e.image_path.name for e in second.synthesis[defect]]
        assert names == sorted(names)
        shared = set(names) & set(evaluation)
        if legacy:  # AnomalyDiffusion's code: indices 0..k train, k..n-1 test -> exactly image k shared
            assert len(names) == k + 1 and shared == {f"{k:03d}.png"}
        else:
            assert len(names) == k and not shared
        assert len(evaluation) == N_PER_DEFECT - k
    if not legacy:
        assert not set(first.synthesis_files()) & set(first.eval_files())


def test_random_order_split_uses_seed(demo_root):
    a = load_category(demo_root, "brick", SplitConfig(order="random", seed=1))
    b = load_category(demo_root, "brick", SplitConfig(order="random", seed=2))
    assert a.synthesis_files() != b.synthesis_files()
    assert not set(a.synthesis_files()) & set(a.eval_files())


def test_check_finds_every_planted_problem(tmp_path, demo_root):
    root = tmp_path / "broken"
    shutil.copytree(demo_root, root)
    (root / "brick" / "ground_truth" / "crack" / "002_mask.png").unlink()
    small = Image.open(root / "brick" / "ground_truth" / "hole" / "001_mask.png").resize((64, 64))
    small.save(root / "brick" / "ground_truth" / "hole" / "001_mask.png")
    (root / "grass" / "test" / "burn" / "004.png").write_bytes(b"not a png at all")
    shutil.rmtree(root / "gravel" / "test" / "scratch")
    (root / "gravel" / "test" / "scratch").mkdir()
    problems = check_dataset(root)
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    assert "crack/002.png: defect image without mask" in joined
    assert "hole/001_mask.png: mask size 64x64 differs from image size 128x128" in joined
    assert "burn/004.png: unreadable or corrupt image" in joined
    assert "scratch: empty defect folder" in joined
    with pytest.raises(UserError, match="crack/002.png: defect image without mask"):
        load_category(root, "brick", SplitConfig())


def test_unknown_category_suggests(demo_root):
    with pytest.raises(UserError, match="'brik' is not in .* \\(did you mean 'brick'\\?\\)"):
        resolve_categories(demo_root, ["brik"])


def test_missing_root_is_one_line(tmp_path):
    problems = check_dataset(tmp_path / "nope")
    assert len(problems) == 1 and "dataset root not found" in problems[0]
