"""Datasets: one reader per released layout, the literature split and the embedded demo set.

`open_layout(config)` gives the reader a protocol's `dataset` section asks for (`kind: auto` recognises
the layout from the folder); every reader yields the same `CategoryData`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from acbench.data.btad import BTADLayout
from acbench.data.category import CategoryData, DefectExample
from acbench.data.detect import recognise
from acbench.data.layout import Layout
from acbench.data.mtd import MTDLayout
from acbench.data.mvtec import MVTecLayout, check_dataset
from acbench.data.mvtec3d import MVTec3DLayout
from acbench.data.mvtec_ad2 import MVTecAD2Layout
from acbench.data.realiad import RealIADLayout
from acbench.data.visa import VisALayout
from acbench.errors import UserError, did_you_mean

__all__ = ["KINDS", "CategoryData", "DefectExample", "Layout", "check_dataset", "check_layout", "dataset_root",
           "open_categories", "open_category", "open_layout"]

log = logging.getLogger(__name__)


class MPDDLayout(MVTecLayout):
    kind = "mpdd"
    title = "MPDD (MVTec AD layout)"


# dataset.kind -> reader. `folder` is any dataset already in the MVTec AD layout; `demo` the embedded set.
KINDS: dict[str, type[Layout]] = {
    "mvtec": MVTecLayout, "folder": MVTecLayout, "demo": MVTecLayout, "mpdd": MPDDLayout, "visa": VisALayout,
    "btad": BTADLayout, "mtd": MTDLayout, "mvtec3d": MVTec3DLayout, "realiad": RealIADLayout,
    "mvtec_ad2": MVTecAD2Layout,
}


class DatasetRoot(type(Path())):  # type: ignore[misc]
    """A dataset folder that remembers its reader, so `acbench.data.mvtec`'s entry points use it."""

    layout: Layout | None = None


def open_layout(config) -> Layout:
    """The reader of a protocol's dataset section, on its root (the demo set is written first)."""
    if config.kind == "demo":
        from acbench.data.demo import materialise_demo

        return MVTecLayout(materialise_demo(seed=config.demo_seed), config)
    root = Path(config.root)
    kind = recognise(root) if config.kind == "auto" else config.kind
    return KINDS[kind](root, config)


def dataset_root(config) -> Path:
    """The folder a protocol's dataset section points to (materialising the demo), carrying its reader."""
    layout = open_layout(config)
    root = DatasetRoot(layout.root)
    root.layout = layout
    return root


def open_category(config, category: str) -> CategoryData:
    layout = open_layout(config)
    return layout.load(category, config.split, image_size=config.image_size, type_texts=config.type_texts,
                       dataset=config.kind if config.kind != "auto" else layout.kind)


def open_categories(config) -> list[CategoryData]:
    """Every selected category of a protocol's dataset, split."""
    layout = open_layout(config)
    dataset = config.kind if config.kind != "auto" else layout.kind
    return [layout.load(cat, config.split, image_size=config.image_size, type_texts=config.type_texts,
                        dataset=dataset)
            for cat in layout.resolve(config.categories)]


def check_layout(root: Path, kind: str = "auto", options=None) -> tuple[str, list[str]]:
    """(the layout kind read, every problem of the folder one line each) for `acbench data check`."""
    if kind == "auto":
        kind = recognise(root)
    if kind not in KINDS or kind == "demo":
        known = ", ".join(k for k in KINDS if k != "demo")
        raise UserError(f"--kind: '{kind}' is unknown{did_you_mean(kind, KINDS)}; use auto or one of {known}")
    return kind, KINDS[kind](Path(root), options).check()

