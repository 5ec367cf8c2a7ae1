"""Reader for BTAD (beanTech Anomaly Detection) as released.

    <root>/<product>/train/ok/*.bmp|png           products 01, 02, 03
    <root>/<product>/test/ok/*.bmp|png            held-out normals
    <root>/<product>/test/ko/*.bmp|png            anomalies (the only defect folder: one type per product)
    <root>/<product>/ground_truth/ko/<stem>.png   masks named like their image (.bmp accepted)

Image formats are mixed across products (.bmp and .png); they are read as they are, without the
.bmp -> .png conversion anomalib applies on download.
"""

from __future__ import annotations

from pathlib import Path

from acbench.data.layout import Found, Layout, Listing, find_mask, list_images

NORMAL = "ok"


class BTADLayout(Layout):
    kind = "btad"
    title = "BTAD (<product>/train/ok, test/{ok,ko}, ground_truth/ko)"

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return root.is_dir() and any((p / "train" / NORMAL).is_dir() for p in root.iterdir())

    def find_categories(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "train" / NORMAL).is_dir())

    def list(self, category: str) -> Listing:
        base = self.root / category
        listing = Listing(category, list_images(base / "train" / NORMAL), list_images(base / "test" / NORMAL), {},
                          normal_train_source="normal training images in train/ok")
        test = base / "test"
        if not test.is_dir():
            listing.problems.append(f"{test}: missing test folder")
            return listing
        for folder in sorted(p for p in test.iterdir() if p.is_dir() and p.name != NORMAL):
            images = list_images(folder)
            if not images:
                listing.problems.append(f"{folder}: empty defect folder")
                continue
            gt = base / "ground_truth" / folder.name
            listing.defects[folder.name] = [
                Found(img, find_mask(gt, (img.stem, f"{img.stem}_mask"), (".png", ".bmp")), gt / f"{img.stem}.png")
                for img in images
            ]
        return listing
