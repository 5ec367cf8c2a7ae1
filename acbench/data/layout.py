"""What every dataset reader shares: a category as listed on disk, its layout problems, the split.

A reader (one module per released layout: `mvtec`, `visa`, `btad`, …) lists each category into a
`Listing` — normal training images, normal test images, and per defect type the anomalous images with
their masks — and reports the structural problems it met (a missing split file, a folder that should be
there). Everything after that is common: `data check` problems (missing masks, masks whose size differs
from their image, unreadable images), the one-line error at the first problem when a study reads the
category, and the literature split into a `CategoryData`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from acbench.data.category import CategoryData, DefectExample
from acbench.data.io import image_size, is_image
from acbench.data.split import split_examples
from acbench.errors import UserError, did_you_mean


def natural_key(path: Path) -> list[int | str]:
    """Sort key that orders '2.png' before '10.png' (MVTec names are zero-padded; others may not be)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.stem)]


def list_images(folder: Path, suffixes: set[str] | None = None) -> list[Path]:
    """Image files of a folder in natural order; `suffixes` (lower-case, with dot) narrows the kinds."""
    if not folder.is_dir():
        return []
    found = (p for p in folder.iterdir() if is_image(p) and (suffixes is None or p.suffix.lower() in suffixes))
    return sorted(found, key=natural_key)


def find_mask(folder: Path, stems: tuple[str, ...], suffixes: tuple[str, ...] = (".png",)) -> Path | None:
    """The first existing `<folder>/<stem><suffix>` over the given stems and suffixes."""
    for stem in stems:
        for suffix in suffixes:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def type_name(text: str) -> str:
    """A defect label as a type name: 'Chunk of Wax Missing' -> 'chunk_of_wax_missing'."""
    return re.sub(r"[^0-9a-z]+", "_", text.strip().lower()).strip("_")


@dataclass(frozen=True)
class Found:
    """One anomalous image as listed: its mask (None when missing) and where the mask was expected."""

    image: Path
    mask: Path | None
    expected_mask: Path
    sample: str | None = None  # images of one physical sample (Real-IAD views) stay on one split side


@dataclass
class Listing:
    """One category as found on disk, before the split."""

    category: str
    normal_train: list[Path]
    test_good: list[Path]
    defects: dict[str, list[Found]]
    problems: list[str] = field(default_factory=list)
    normal_train_source: str = "normal training images"


@dataclass
class RawCategory:
    """A category ready for the split (every listed anomaly has its mask)."""

    category: str
    normal_train: list[Path]
    test_good: list[Path]
    defects: dict[str, list[DefectExample]]


def mask_values_max(path: Path, class_ids: bool = False) -> int:
    """The largest mask value as the reader sees it: grey level (as `load_mask` reads it, 1-bit and
    palette masks included), or with `class_ids` the stored value itself (VisA's ids, palette indices)."""
    with Image.open(path) as img:
        return int(np.asarray(img if class_ids else img.convert("L")).max(initial=0))


def pair_problems(image: Path, mask: Path | None, mask_floor: int = 128) -> list[str]:
    """An unreadable image or mask, a mask whose size differs from its image, or a mask with no value
    >= `mask_floor` (read as empty: a 0/1 mask, say, where 0/255 is expected)."""
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
    try:
        top = mask_values_max(mask, class_ids=mask_floor < 128)
    except (OSError, ValueError) as exc:
        return [f"{mask}: unreadable or corrupt image ({exc.__class__.__name__}); replace the file"]
    if top < mask_floor:
        return [f"{mask}: mask is empty as read (largest value {top}, anomalous pixels need >= {mask_floor}); "
                f"save defect pixels as 255"]
    return []


def listing_problems(listing: Listing, where: Path, deep: bool = True, mask_floor: int = 128) -> list[str]:
    """Every problem of a listed category, one line each; `deep` also opens each image header and mask."""
    problems = list(listing.problems)
    if not listing.normal_train:
        problems.append(f"{where}: no {listing.normal_train_source}")
    for found in (f for items in listing.defects.values() for f in items):
        if found.mask is None:
            problems.append(f"{found.image}: defect image without mask (expected {found.expected_mask})")
        elif deep:
            problems += pair_problems(found.image, found.mask, mask_floor)
    if deep:
        for img in listing.normal_train + listing.test_good:
            problems += pair_problems(img, None)
    return problems


class Layout:
    """A released dataset layout under one root folder. Subclasses set `kind` and implement `list`."""

    kind: ClassVar[str]
    title: ClassVar[str]  # how the layout is named in messages: "VisA (raw release)"
    type_texts: ClassVar[dict[str, str]] = {}  # default words for defect type names the layout uses
    mask_floor: ClassVar[int] = 128  # smallest mask value read as anomalous (VisA's class ids: 1)

    def __init__(self, root: Path, options: Any = None):
        self.root = Path(root)
        self.options = options

    # -- what a reader implements -------------------------------------------------------------------
    @classmethod
    def recognise(cls, root: Path) -> bool:
        """Whether `root` holds this layout (used by `kind: auto`)."""
        raise NotImplementedError

    def find_categories(self) -> list[str]:
        """Category names present under the root (empty when the layout is not there)."""
        raise NotImplementedError

    def list(self, category: str) -> Listing:
        raise NotImplementedError

    def category_dir(self, category: str) -> Path:
        return self.root / category

    # -- common -------------------------------------------------------------------------------------
    def categories(self) -> list[str]:
        if not self.root.is_dir():
            raise UserError(f"{self.root}: dataset root not found; check 'dataset.root' or the environment variable")
        cats = self.find_categories()
        if not cats:
            from acbench.data.detect import detect_kind

            seen = detect_kind(self.root, quiet=True)
            hint = (f"this folder is in the {seen} layout: set 'dataset.kind: {seen}' (or auto)" if seen
                    else "point 'dataset.root' at the folder as downloaded")
            raise UserError(f"{self.root}: no category in the {self.title} layout; {hint}")
        return cats

    def resolve(self, wanted: str | list[str]) -> list[str]:
        available = self.categories()
        if wanted == "all":
            return available
        for cat in wanted:
            if cat not in available:
                raise UserError(f"dataset.categories: '{cat}' is not in {self.root}{did_you_mean(cat, available)}; "
                                f"available: {', '.join(available)}")
        return list(wanted)

    def problems(self, category: str, deep: bool = True) -> list[str]:
        return listing_problems(self.list(category), self.category_dir(category), deep, self.mask_floor)

    def check(self) -> list[str]:
        """All problems of the dataset folder, one line each."""
        try:
            cats = self.categories()
        except UserError as exc:
            return [str(exc)]
        return [p for cat in cats for p in self.problems(cat)]

    def scan(self, category: str) -> tuple[RawCategory, dict[str, list[str | None]]]:
        """The category ready for the split, and the sample id of each anomaly (per type, in order)."""
        listing = self.list(category)
        problems = listing_problems(listing, self.category_dir(category), deep=False)
        if problems:
            raise UserError(problems[0] + " (run 'acbench data check' for every problem)")
        defects = {t: [self.example(f, t) for f in items] for t, items in listing.defects.items()}
        samples = {t: [f.sample for f in items] for t, items in listing.defects.items()}
        return RawCategory(category, listing.normal_train, listing.test_good, defects), samples

    def example(self, found: Found, anomaly_type: str) -> DefectExample:
        return DefectExample(found.image, found.mask, anomaly_type)  # type: ignore[arg-type]

    def load(self, category: str, split, image_size: int | None = None,
             type_texts: dict[str, str] | None = None, dataset: str | None = None) -> CategoryData:
        """Read a category and apply the literature split (see `acbench.data.split`)."""
        raw, samples = self.scan(category)
        return split_category(raw, samples, split, dataset or self.kind, self.root, image_size,
                              {**self.type_texts, **(type_texts or {})})


def _grouped(examples: list[DefectExample], samples: list[str | None]) -> list[list[DefectExample]]:
    """Consecutive examples of one sample form one group; examples without a sample stand alone."""
    groups: list[list[DefectExample]] = []
    last: str | None = None
    for example, sample in zip(examples, samples, strict=True):
        if sample is not None and sample == last:
            groups[-1].append(example)
        else:
            groups.append([example])
        last = sample
    return groups


def split_category(raw: RawCategory, samples: dict[str, list[str | None]], split, dataset: str, root: Path,
                   image_size: int | None, type_texts: dict[str, str]) -> CategoryData:
    """Per defect type, the first floor(n/3) (by name, or by sample where views are grouped) synthesise."""
    synthesis, evaluation = {}, {}
    for defect, examples in raw.defects.items():
        groups = _grouped(examples, samples.get(defect, [None] * len(examples)))
        first, rest = split_examples(groups, split)
        synthesis[defect] = [e for g in first for e in g]
        evaluation[defect] = [e for g in rest for e in g]
    return CategoryData(
        dataset=dataset, category=raw.category, root=root, normal_train=raw.normal_train,
        synthesis={k: v for k, v in synthesis.items() if v}, eval_normal=raw.test_good,
        eval_anomalies={k: v for k, v in evaluation.items() if v},
        type_texts=dict(type_texts), image_size=image_size,
    )
