"""Reader for Real-IAD as released, with its JSON split files.

    <root>/realiad_{256,512,1024,raw}/<category>/OK/<Sxxxx>/<category>_xxxx_OK_C<v>_<time>.jpg
    <root>/realiad_{…}/<category>/NG/<type>/<Sxxxx>/<…>_NG_C<v>_<time>.jpg  + <…>_mask.png
    <root>/realiad_jsons/realiad_jsons/<category>.json     {"meta": …, "train": […], "test": […]}
        each entry: category, anomaly_class ("OK" or the type code), image_path, mask_path

The split comes from the JSON file (`dataset.split_file`, default the multi-view UIAD lists): `train`
normals train, `test` normals are held out, and every `test` anomaly joins its type's pool for the
literature split (anomalies listed under `train`, as in the noisy FUIAD lists, are left out). An
anomaly's type is the `NG/<type>` folder of its path (else its `anomaly_class`). Paths in the JSON are
taken relative to the resolution folder, or to its category folder (as anomalib joins them).

Each sample is photographed from 5 views (C1 top, C2–C5 oblique); `dataset.views: [C1]` keeps some.
The split keeps all views of one sample on the same side (they would leak otherwise): per type, the
first floor(n/3) samples by name synthesise. `dataset.resolution` picks the image folder; by default the
smallest one present.
"""

from __future__ import annotations

import json
import logging
import re
from functools import cached_property
from pathlib import Path

from acbench.data.layout import Found, Layout, Listing, natural_key
from acbench.errors import UserError

log = logging.getLogger(__name__)

RESOLUTIONS = ("256", "512", "1024", "raw")
SPLIT_FILE = "realiad_jsons/realiad_jsons/{category}.json"
NORMAL = "OK"
VIEW = re.compile(r"_(C[1-5])_")


def _type_of(entry: dict) -> str:
    """The defect type: the folder under NG/ (…/NG/<type>/<sample>/<file>), else the entry's anomaly_class."""
    parts = Path(entry["image_path"]).parts
    if "NG" in parts[:-2]:
        return parts[parts.index("NG") + 1]
    return str(entry["anomaly_class"])


class RealIADLayout(Layout):
    kind = "realiad"
    title = "Real-IAD (realiad_<resolution>/<category>/{OK,NG}, realiad_jsons/)"
    # Type codes of the release and their meaning (as third-party Real-IAD loaders spell them out).
    type_texts = {"AK": "pit", "BX": "deformation", "CH": "abrasion", "HS": "scratch", "PS": "damage",
                  "QS": "missing parts", "YW": "foreign objects", "ZW": "contamination"}

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return root.is_dir() and any((root / f"realiad_{r}").is_dir() for r in RESOLUTIONS)

    @cached_property
    def images_dir(self) -> Path:
        wanted = getattr(self.options, "resolution", None)
        if wanted:
            return self.root / f"realiad_{wanted}"
        present = [self.root / f"realiad_{r}" for r in RESOLUTIONS if (self.root / f"realiad_{r}").is_dir()]
        if len(present) > 1:
            log.info("Real-IAD: reading %s (set dataset.resolution for another)", present[0].name)
        return present[0] if present else self.root / f"realiad_{RESOLUTIONS[0]}"

    @property
    def views(self) -> set[str] | None:
        views = getattr(self.options, "views", None)
        return set(views) if views else None

    def find_categories(self) -> list[str]:
        if not self.images_dir.is_dir():
            return []
        return sorted(p.name for p in self.images_dir.iterdir() if (p / NORMAL).is_dir() or (p / "NG").is_dir())

    def category_dir(self, category: str) -> Path:
        return self.images_dir / category

    def split_file(self, category: str) -> Path:
        pattern = getattr(self.options, "split_file", None) or SPLIT_FILE
        return self.root / pattern.format(category=category)

    def _resolve(self, category: str, rel: str) -> Path:
        under_category = self.images_dir / category / rel
        return under_category if under_category.exists() else self.images_dir / rel

    def _read(self, path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: unreadable JSON split file ({exc.__class__.__name__}); restore it from "
                            f"realiad_jsons.zip") from None
        if not isinstance(data, dict) or not ({"train", "test"} & set(data)):
            raise UserError(f"{path}: not a Real-IAD split file (needs 'train' and 'test' lists)")
        return data

    def list(self, category: str) -> Listing:
        listing = Listing(category, [], [], {}, normal_train_source="normal training images in the split file")
        split_file = self.split_file(category)
        if not split_file.is_file():
            listing.problems.append(
                f"{split_file}: missing split file; unpack realiad_jsons.zip from the Real-IAD download into "
                f"{self.root} (or set 'dataset.split_file')")
            return listing
        data = self._read(split_file)
        normal = data.get("meta", {}).get("normal_class", NORMAL) if isinstance(data.get("meta"), dict) else NORMAL
        anomalies: dict[str, list[Found]] = {}
        for side in ("train", "test"):
            for entry in data.get(side, []):
                image = self._resolve(category, entry["image_path"])
                view = VIEW.search(image.name)
                if self.views is not None and (view is None or view.group(1) not in self.views):
                    continue
                if not image.is_file():
                    listing.problems.append(f"{image}: listed in {split_file} but not found")
                elif entry.get("anomaly_class", normal) == normal:
                    (listing.normal_train if side == "train" else listing.test_good).append(image)
                elif side == "test":
                    mask_rel = entry.get("mask_path")
                    expected = (self._resolve(category, mask_rel) if mask_rel
                                else image.with_name(f"{image.stem}_mask.png"))
                    anomalies.setdefault(_type_of(entry), []).append(
                        Found(image, expected if expected.is_file() else None, expected, image.parent.name))
        listing.normal_train.sort(key=natural_key)
        listing.test_good.sort(key=natural_key)
        for atype in sorted(anomalies):
            listing.defects[atype] = sorted(anomalies[atype], key=lambda f: (natural_key(Path(f.sample or "")),
                                                                              natural_key(f.image)))
        return listing
