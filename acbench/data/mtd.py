"""Reader for the Magnetic Tile Defects dataset (MTD) as released (abin24/Magnetic-tile-defect-datasets.).

    <root>/MT_Free/Imgs/<stem>.jpg + <stem>.png        defect-free tiles (the .png is an empty mask)
    <root>/MT_<Type>/Imgs/<stem>.jpg + <stem>.png      Blowhole, Break, Crack, Fray, Uneven: mask beside image

One product, read as the category `magnetic_tile`; the types are the `MT_*` folders (lower-cased).

The release has no train/test split, so this reader makes one, deterministic and independent of the
machine and of file-listing order: a normal image is held out for evaluation when it is among the
first floor(n/5) normal images ordered by the SHA-256 of its file name; the other 80% train. Ordering by
a hash rather than by name keeps the held-out fifth spread over the capture sessions the names encode
(`exp1_num_…`, `exp6_num_…`). The anomalies are divided by the literature split like any other type.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from acbench.data.layout import Found, Layout, Listing, list_images, natural_key, type_name

CATEGORY = "magnetic_tile"
NORMAL = "MT_Free"
PREFIX = "MT_"
IMAGES = "Imgs"
IMAGE_SUFFIXES = {".jpg", ".jpeg"}
HELD_OUT = 5  # one normal image in five is held out for evaluation


def split_normals(images: list[Path]) -> tuple[list[Path], list[Path]]:
    """(train, test) of the normal images: the test side is the first floor(n/5) by SHA-256 of the name."""
    by_hash = sorted(images, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    k = len(images) // HELD_OUT
    return sorted(by_hash[k:], key=natural_key), sorted(by_hash[:k], key=natural_key)


class MTDLayout(Layout):
    kind = "mtd"
    title = "Magnetic Tile Defects (MT_Free/Imgs, MT_<Type>/Imgs with masks beside the images)"
    type_texts = {"uneven": "uneven surface"}

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return (root / NORMAL / IMAGES).is_dir()

    def find_categories(self) -> list[str]:
        return [CATEGORY] if self.recognise(self.root) else []

    def category_dir(self, category: str) -> Path:
        return self.root / NORMAL / IMAGES

    def list(self, category: str) -> Listing:
        train, test = split_normals(list_images(self.root / NORMAL / IMAGES, IMAGE_SUFFIXES))
        listing = Listing(category, train, test, {}, normal_train_source="defect-free .jpg images")
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                             and p.name != NORMAL):
            images = list_images(folder / IMAGES, IMAGE_SUFFIXES)
            if not images:
                listing.problems.append(f"{folder / IMAGES}: empty defect folder")
                continue
            listing.defects[type_name(folder.name[len(PREFIX):])] = [
                Found(img, mask if (mask := img.with_suffix(".png")).is_file() else None, img.with_suffix(".png"))
                for img in images
            ]
        return listing
