"""Reader for the MVTec AD folder layout (also MPDD, the converted VisA export, the demo set).

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/<stem>.png
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png     (or <stem>.png: VisA export, MPDD)

The module-level functions (`load_category`, `resolve_categories`, `scan_category`, `check_dataset`)
are the harness's entry points. Given the root that `acbench.data.dataset_root` returns for a protocol,
they hand the work to that protocol's layout reader (VisA, BTAD, …); given a plain folder, to the
reader of the layout recognised in it (`acbench.data.detect`), the MVTec one when none is.
"""

from __future__ import annotations

from pathlib import Path

from acbench.data.category import CategoryData
from acbench.data.layout import (
    Found,
    Layout,
    Listing,
    RawCategory,
    find_mask,
    list_images,
    natural_key,
    pair_problems,
)

__all__ = ["GOOD", "MVTecLayout", "RawCategory", "category_problems", "check_dataset", "list_categories",
           "list_images", "load_category", "mask_path_for", "natural_key", "resolve_categories", "scan_category"]

GOOD = "good"
_pair_problems = pair_problems  # the name older callers import


def mask_path_for(root: Path, category: str, defect: str, image: Path) -> Path | None:
    """The ground-truth mask of a defect image: `<stem>_mask.*` (MVTec) or `<stem>.*` (VisA export)."""
    return find_mask(root / category / "ground_truth" / defect, (f"{image.stem}_mask", image.stem),
                     (".png", image.suffix, ".jpg", ".bmp"))


class MVTecLayout(Layout):
    kind = "mvtec"
    title = "MVTec AD (train/good, test/<type>, ground_truth/<type>)"

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return root.is_dir() and any((p / "train" / GOOD).is_dir() for p in root.iterdir())

    def find_categories(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "train" / GOOD).is_dir())

    def list(self, category: str) -> Listing:
        base = self.root / category
        listing = Listing(category, list_images(base / "train" / GOOD), list_images(base / "test" / GOOD), {},
                          normal_train_source="normal training images in train/good")
        test = base / "test"
        if not test.is_dir():
            listing.problems.append(f"{test}: missing test folder")
            return listing
        for folder in sorted(p for p in test.iterdir() if p.is_dir()):
            images = list_images(folder)
            if not images:
                listing.problems.append(f"{folder}: empty defect folder")
            if folder.name == GOOD or not images:
                continue
            expected = base / "ground_truth" / folder.name
            listing.defects[folder.name] = [
                Found(img, mask_path_for(self.root, category, folder.name, img), expected / f"{img.stem}_mask.png")
                for img in images
            ]
        return listing


def _layout(root: Path) -> Layout:
    """The reader attached to a protocol's dataset root; for a plain folder, the layout recognised in it
    (with default options), else the MVTec reader, whose errors then say what it expected."""
    attached = getattr(root, "layout", None)
    if attached is not None:
        return attached
    from acbench.data.detect import DETECTION_ORDER

    root = Path(root)
    if root.is_dir():
        for layout in DETECTION_ORDER:
            if layout.recognise(root):
                return layout(root)
    return MVTecLayout(root)


def list_categories(root: Path) -> list[str]:
    return _layout(root).categories()


def scan_category(root: Path, category: str) -> RawCategory:
    """Read one category; raises a UserError at the first layout problem (see `check_dataset`)."""
    return _layout(root).scan(category)[0]


def category_problems(root: Path, category: str, deep: bool = True) -> list[str]:
    """Every layout problem of one category, one line each. `deep` also opens each image."""
    layout = _layout(root)
    return layout.problems(category, deep)


def check_dataset(root: Path) -> list[str]:
    """All problems of a dataset folder (missing masks, size mismatches, unreadable files, empty folders)."""
    return _layout(root).check()


def resolve_categories(root: Path, wanted: str | list[str]) -> list[str]:
    return _layout(root).resolve(wanted)


def load_category(root: Path, category: str, split, dataset: str | None = None,
                  image_size: int | None = None, type_texts: dict[str, str] | None = None) -> CategoryData:
    """Read a category and apply the literature split (see `acbench.data.split`).

    `dataset` names the data in results (default, or `auto`: the kind of layout read)."""
    layout = _layout(root)
    if dataset in (None, "auto"):
        dataset = layout.kind
    return layout.load(category, split, image_size=image_size, type_texts=type_texts, dataset=dataset)
