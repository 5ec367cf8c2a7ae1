"""Reader for the RGB part of MVTec 3D-AD as released (the `xyz/` point maps are ignored).

    <root>/<category>/train/good/rgb/*.png
    <root>/<category>/validation/good/rgb/*.png      not used (normal images for model selection)
    <root>/<category>/test/good/rgb/*.png
    <root>/<category>/test/<type>/rgb/*.png
    <root>/<category>/test/<type>/gt/*.png           masks named like their image

Types are the test folders (40 category/type pairs, `combined` included), as SeaS reads the RGB part.
"""

from __future__ import annotations

from pathlib import Path

from acbench.data.layout import Found, Layout, Listing, find_mask, list_images

GOOD = "good"


class MVTec3DLayout(Layout):
    kind = "mvtec3d"
    title = "MVTec 3D-AD (<category>/train/good/rgb, test/<type>/{rgb,gt})"

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return root.is_dir() and any((p / "train" / GOOD / "rgb").is_dir() for p in root.iterdir())

    def find_categories(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "train" / GOOD / "rgb").is_dir())

    def list(self, category: str) -> Listing:
        base = self.root / category
        listing = Listing(category, list_images(base / "train" / GOOD / "rgb"),
                          list_images(base / "test" / GOOD / "rgb"), {},
                          normal_train_source="normal training images in train/good/rgb")
        test = base / "test"
        if not test.is_dir():
            listing.problems.append(f"{test}: missing test folder")
            return listing
        for folder in sorted(p for p in test.iterdir() if p.is_dir() and p.name != GOOD):
            images = list_images(folder / "rgb")
            if not images:
                listing.problems.append(f"{folder / 'rgb'}: empty defect folder")
                continue
            gt = folder / "gt"
            listing.defects[folder.name] = [
                Found(img, find_mask(gt, (img.stem,)), gt / f"{img.stem}.png") for img in images
            ]
        return listing
