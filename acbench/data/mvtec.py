"""Reader for the MVTec AD folder layout, used for any dataset converted to it (VisA, the demo set).

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/<stem>.png
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from acbench.data.category import CategoryData, DefectExample
from acbench.data.io import image_size, is_image
from acbench.data.split import split_examples
from acbench.errors import UserError, did_you_mean

GOOD = "good"


def natural_key(path: Path) -> list[int | str]:
    """Sort key that orders '2.png' before '10.png' (MVTec names are zero-padded; others may not be)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.stem)]


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_image(p)), key=natural_key)


def mask_path_for(root: Path, category: str, defect: str, image: Path) -> Path | None:
    """The ground-truth mask of a defect image: `<stem>_mask.*` (MVTec) or `<stem>.*` (VisA export)."""
    folder = root / category / "ground_truth" / defect
    for stem in (f"{image.stem}_mask", image.stem):
        for suffix in (".png", image.suffix, ".jpg", ".bmp"):
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


@dataclass
class RawCategory:
    """A category as found on disk, before the split."""

    category: str
    normal_train: list[Path]
    test_good: list[Path]
    defects: dict[str, list[DefectExample]]


def list_categories(root: Path) -> list[str]:
    if not root.is_dir():
        raise UserError(f"{root}: dataset root not found; check 'dataset.root' or the environment variable")
    cats = sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())
    if not cats:
        raise UserError(f"{root}: no category folder with train/good inside; expected the MVTec AD layout")
    return cats


def scan_category(root: Path, category: str) -> RawCategory:
    """Read one category; raises a UserError at the first layout problem (see `check_dataset`)."""
    problems = category_problems(root, category, deep=False)
    if problems:
        raise UserError(problems[0] + " (run 'acbench data check' for every problem)")
    base = root / category
    defects = {}
    for folder in sorted(p for p in (base / "test").iterdir() if p.is_dir() and p.name != GOOD):
        defects[folder.name] = [
            DefectExample(img, mask_path_for(root, category, folder.name, img), folder.name)  # type: ignore[arg-type]
            for img in list_images(folder)
        ]
    return RawCategory(category, list_images(base / "train" / GOOD), list_images(base / "test" / GOOD), defects)


def category_problems(root: Path, category: str, deep: bool = True) -> list[str]:
    """Every layout problem of one category, one line each. `deep` also opens each image."""
    base = root / category
    problems: list[str] = []
    if not list_images(base / "train" / GOOD):
        problems.append(f"{base / 'train' / GOOD}: no normal training images")
    test = base / "test"
    if not test.is_dir():
        return problems + [f"{test}: missing test folder"]
    for folder in sorted(p for p in test.iterdir() if p.is_dir()):
        images = list_images(folder)
        if not images:
            problems.append(f"{folder}: empty defect folder")
        if folder.name == GOOD:
            continue
        for img in images:
            mask = mask_path_for(root, category, folder.name, img)
            if mask is None:
                problems.append(f"{img}: defect image without mask (expected ground_truth/"
                                f"{folder.name}/{img.stem}_mask.png)")
            elif deep:
                problems += _pair_problems(img, mask)
    if deep:
        for img in list_images(base / "train" / GOOD) + list_images(test / GOOD):
            problems += _pair_problems(img, None)
    return problems


def _pair_problems(image: Path, mask: Path | None) -> list[str]:
    try:
        size = image_size(image)
    except UserError as exc:
        return [str(exc)]
    if mask is None:
        return []
    try:
        msize = image_size(mask)
    except UserError as exc:
        return [str(exc)]
    if msize != size:
        return [f"{mask}: mask size {msize[0]}x{msize[1]} differs from image size {size[0]}x{size[1]}"]
    return []


def check_dataset(root: Path) -> list[str]:
    """All problems of a dataset folder (missing masks, size mismatches, unreadable files, empty folders)."""
    try:
        cats = list_categories(root)
    except UserError as exc:
        return [str(exc)]
    return [p for cat in cats for p in category_problems(root, cat)]


def resolve_categories(root: Path, wanted: str | list[str]) -> list[str]:
    available = list_categories(root)
    if wanted == "all":
        return available
    for cat in wanted:
        if cat not in available:
            raise UserError(f"dataset.categories: '{cat}' is not in {root}{did_you_mean(cat, available)}; "
                            f"available: {', '.join(available)}")
    return list(wanted)


def load_category(root: Path, category: str, split, dataset: str = "mvtec",
                  image_size: int | None = None, type_texts: dict[str, str] | None = None) -> CategoryData:
    """Read a category and apply the literature split (see `acbench.data.split`)."""
    raw = scan_category(root, category)
    synthesis, evaluation = {}, {}
    for defect, examples in raw.defects.items():
        synthesis[defect], evaluation[defect] = split_examples(examples, split)
    return CategoryData(
        dataset=dataset, category=category, root=root, normal_train=raw.normal_train,
        synthesis={k: v for k, v in synthesis.items() if v}, eval_normal=raw.test_good,
        eval_anomalies={k: v for k, v in evaluation.items() if v},
        type_texts=dict(type_texts or {}), image_size=image_size,
    )
