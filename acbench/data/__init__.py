"""Datasets: the MVTec AD layout reader, the literature split and the embedded demo set."""

from __future__ import annotations

from pathlib import Path

from acbench.data.category import CategoryData, DefectExample
from acbench.data.mvtec import check_dataset, load_category, resolve_categories

__all__ = ["CategoryData", "DefectExample", "check_dataset", "dataset_root", "open_categories"]


def dataset_root(config) -> Path:
    """The folder in MVTec layout that a protocol's dataset section points to (materialising the demo)."""
    if config.kind == "demo":
        from acbench.data.demo import materialise_demo

        return materialise_demo(seed=config.demo_seed)
    return Path(config.root)


def open_categories(config) -> list[CategoryData]:
    """Every selected category of a protocol's dataset, split."""
    root = dataset_root(config)
    return [
        load_category(root, cat, config.split, dataset=config.kind, image_size=config.image_size,
                      type_texts=config.type_texts)
        for cat in resolve_categories(root, config.categories)
    ]
