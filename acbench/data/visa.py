"""Reader for VisA as released (amazon-science/spot-diff), and for its MVTec-style export.

    <root>/split_csv/1cls.csv                       object,split,label,image,mask (paths under root)
    <root>/<category>/Data/Images/{Normal,Anomaly}/*.JPG
    <root>/<category>/Data/Masks/Anomaly/*.png      class-id masks: 0 background, k > 0 defect class k
    <root>/<category>/image_anno.csv                image,label,mask: the defect names of each image

Normal images follow the split file (train -> training, test -> held-out normals); every anomaly goes to
the per-type pool that the literature split divides. Defect types (`dataset.types`):
  annotated (default)  one type per annotated defect name in image_anno.csv; an image annotated with
                       several names is `combined`, as in the SeaS VisA split
  single               every anomaly is one type, `bad`, as in anomalib's and spot-diff's 1cls export
Masks hold class ids (1, 2, …), which a 0/255 reader would read as empty: the reader hands methods and
detectors binarised copies (non-zero -> 255, as anomalib's conversion does), written once to the cache.
A root in the MVTec layout (`train/good`, `test/bad`, `ground_truth/bad`) is read as before.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from acbench.data.category import DefectExample
from acbench.data.io import atomic_write
from acbench.data.layout import Found, Layout, Listing, natural_key, type_name
from acbench.data.mvtec import MVTecLayout
from acbench.errors import UserError

log = logging.getLogger(__name__)

SPLIT_FILE = "split_csv/1cls.csv"
ANNOTATIONS = "image_anno.csv"
SINGLE_TYPE = "bad"
COMBINED = "combined"


def _read_csv(path: Path, columns: set[str]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = columns - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                                f"expected the header {','.join(sorted(columns))} of the VisA release")
            return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: unreadable CSV ({exc.__class__.__name__}); restore the file from the release") \
            from None


def binary_mask(mask: Path) -> Path:
    """A 0/255 copy of a class-id mask (any non-zero id is anomalous), cached by path, size and mtime."""
    from acbench.data.demo import demo_cache_dir

    stat = mask.stat()
    key = hashlib.sha256(f"{mask.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    target = demo_cache_dir() / "visa-masks" / f"{mask.stem}-{key}.png"
    if not target.is_file():
        with Image.open(mask) as img:
            ids = np.asarray(img)  # palette masks give indices, greyscale masks give values: both are ids
        if ids.ndim == 3:
            ids = ids.max(axis=2)
        binary = Image.fromarray(((ids != 0) * 255).astype(np.uint8))
        atomic_write(target, lambda tmp: binary.save(tmp, format="PNG"))
    return target


class VisALayout(Layout):
    kind = "visa"
    title = "VisA (<category>/Data/Images, split_csv/1cls.csv)"
    mask_floor = 1  # class ids

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return root.is_dir() and any((p / "Data" / "Images").is_dir() for p in root.iterdir())

    def problems(self, category: str, deep: bool = True) -> list[str]:
        if self.exported is not None:
            return self.exported.problems(category, deep)
        return super().problems(category, deep)

    @cached_property
    def exported(self) -> MVTecLayout | None:
        """The MVTec-style export (train/good, test/bad) when the root holds no raw category."""
        if self.recognise(self.root) or not MVTecLayout.recognise(self.root):
            return None
        return MVTecLayout(self.root)

    @property
    def types(self) -> str:
        return getattr(self.options, "types", None) or "annotated"

    @property
    def split_file(self) -> Path:
        return self.root / (getattr(self.options, "split_file", None) or SPLIT_FILE)

    def find_categories(self) -> list[str]:
        if self.exported is not None:
            return self.exported.find_categories()
        return sorted(p.name for p in self.root.iterdir() if (p / "Data" / "Images").is_dir())

    @cached_property
    def _split_rows(self) -> list[dict[str, str]]:
        return _read_csv(self.split_file, {"object", "split", "label", "image", "mask"})

    def list(self, category: str) -> Listing:
        if self.exported is not None:
            return self.exported.list(category)
        listing = Listing(category, [], [], {}, normal_train_source="training images in the split file")
        if not self.split_file.is_file():
            listing.problems.append(
                f"{self.split_file}: missing split file; copy split_csv/ from github.com/amazon-science/spot-diff "
                f"into {self.root} (or set 'dataset.split_file')")
            return listing
        rows = [r for r in self._split_rows if r["object"] == category]
        anomalies: list[tuple[Path, str]] = []
        for row in rows:
            image = self.root / row["image"]
            if not image.is_file():
                listing.problems.append(f"{image}: listed in {self.split_file} but not found")
            elif row["label"] == "normal":
                (listing.normal_train if row["split"] == "train" else listing.test_good).append(image)
            else:
                anomalies.append((image, row["mask"]))
        listing.normal_train.sort(key=natural_key)
        listing.test_good.sort(key=natural_key)
        kinds = self._types_of(category, [img for img, _ in anomalies], listing.problems)
        for image, mask in sorted(anomalies, key=lambda a: natural_key(a[0])):
            expected = self.root / mask if mask else self.category_dir(category) / "Data/Masks/Anomaly" / \
                f"{image.stem}.png"
            atype = kinds.get(image.name)
            if atype is not None:
                listing.defects.setdefault(atype, []).append(
                    Found(image, expected if expected.is_file() else None, expected))
        return listing

    def _types_of(self, category: str, images: list[Path], problems: list[str]) -> dict[str, str]:
        """Image file name -> defect type, from image_anno.csv (types: annotated) or one type (single)."""
        if self.types == "single":
            return {img.name: SINGLE_TYPE for img in images}
        anno = self.category_dir(category) / ANNOTATIONS
        if not anno.is_file():
            problems.append(f"{anno}: missing; it ships in each VisA category folder: restore it, or set "
                            f"'dataset.types: single' to treat every anomaly as one type")
            return {}
        labels = {Path(r["image"]).name: r["label"] for r in _read_csv(anno, {"image", "label", "mask"})}
        kinds = {}
        for img in images:
            if img.name not in labels:
                problems.append(f"{img}: anomalous image absent from {anno}")
                continue
            names = sorted({type_name(x) for x in labels[img.name].split(",") if type_name(x)})
            kinds[img.name] = names[0] if len(names) == 1 else COMBINED
        return kinds

    def example(self, found: Found, anomaly_type: str) -> DefectExample:
        if self.exported is not None:
            return super().example(found, anomaly_type)
        return DefectExample(found.image, binary_mask(found.mask), anomaly_type)  # type: ignore[arg-type]

