"""Reader for MVTec AD 2 as released (the public test set: the private ones have no ground truth).

    <root>/<category>/train/good/*.png
    <root>/<category>/validation/good/*.png                  not used (normal images for model selection)
    <root>/<category>/test_public/good/*.png
    <root>/<category>/test_public/bad/*.png
    <root>/<category>/test_public/ground_truth/bad/<stem>_mask.png
    <root>/<category>/test_private/, test_private_mixed/     not used (no masks; benchmark server only)

There are no defect-type folders: each category has one type, `bad`, and both the synthesis references
and the evaluation anomalies come from `test_public`.
"""

from __future__ import annotations

from pathlib import Path

from acbench.data.layout import Found, Layout, Listing, find_mask, list_images

GOOD = "good"
PUBLIC = "test_public"
GROUND_TRUTH = "ground_truth"


class MVTecAD2Layout(Layout):
    kind = "mvtec_ad2"
    title = "MVTec AD 2 (<category>/train/good, test_public/{good,bad,ground_truth})"

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return root.is_dir() and any((p / PUBLIC).is_dir() for p in root.iterdir())

    def find_categories(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / PUBLIC).is_dir())

    def list(self, category: str) -> Listing:
        base = self.root / category
        test = base / PUBLIC
        listing = Listing(category, list_images(base / "train" / GOOD), list_images(test / GOOD), {},
                          normal_train_source="normal training images in train/good")
        for folder in sorted(p for p in test.iterdir() if p.is_dir() and p.name not in (GOOD, GROUND_TRUTH)):
            images = list_images(folder)
            if not images:
                listing.problems.append(f"{folder}: empty defect folder")
                continue
            gt = test / GROUND_TRUTH / folder.name
            listing.defects[folder.name] = [
                Found(img, find_mask(gt, (f"{img.stem}_mask", img.stem)), gt / f"{img.stem}_mask.png")
                for img in images
            ]
        return listing
