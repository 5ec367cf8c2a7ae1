"""Hand-made results frames and run folders for the report tests (known values, known winners)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from acbench.results import CORE_COLUMNS
from acbench.synthesis import Sample, write_synthetic_set

CATEGORIES = ("bottle", "metal_nut")
# method label -> category -> values per seed (0, 1)
PIXEL_AP = {
    "perlin": {"bottle": (0.50, 0.60), "metal_nut": (0.40, 0.40)},
    "crop-paste": {"bottle": (0.70, 0.80), "metal_nut": (0.85, 0.87)},
    "cutpaste/patch": {"bottle": (0.90, 0.92), "metal_nut": (0.30, 0.34)},
}
FID = {  # lower is better
    "perlin": {"bottle": 50.0, "metal_nut": 20.0},
    "crop-paste": {"bottle": 30.0, "metal_nut": 60.0},
    "cutpaste/patch": {"bottle": 40.0, "metal_nut": 25.0},
}


def _row(label: str, **kw) -> dict:
    method, _, variant = label.partition("/")
    base = {"method": method, "variant": variant, "category": "", "seed": 0, "stage": "quality", "detector": "",
            "anomaly_type": "", "metric": "", "scope": "quality", "value": np.nan}
    return base | kw


def results_frame(random_label: str | None = "cutpaste/patch") -> pd.DataFrame:
    rows = []
    for label, cats in PIXEL_AP.items():
        for cat, values in cats.items():
            for seed, value in enumerate(values):
                weights = "random" if label == random_label else "pretrained"
                rows.append(_row(label, category=cat, seed=seed, stage="detect", detector="unet-localization",
                                 metric="pixel_ap", scope="pixel", value=value, weights=weights))
                rows.append(_row(label, category=cat, seed=seed, stage="quality", metric="fid",
                                 value=FID[label][cat], weights="pretrained"))
                # a per-type row with an extreme value: never part of the category tables
                rows.append(_row(label, category=cat, seed=seed, metric="fid", anomaly_type="crack", value=1e6,
                                 weights="pretrained"))
    frame = pd.DataFrame(rows)
    return frame[CORE_COLUMNS + ["weights"]]


def manifest(name: str = "unit", kind: str = "mvtec", methods: list[dict] | None = None) -> dict:
    methods = methods or [{"name": "perlin"}, {"name": "crop-paste"}, {"name": "cutpaste", "variant": "patch"}]
    return {
        "protocol": {"name": name, "description": "hand-made run", "dataset": {"kind": kind, "root": "/nonexistent"},
                     "methods": methods, "detectors": [{"name": "unet-localization", "preset": "tiny"}],
                     "metrics": ["fid"], "report": {"formats": ["md", "csv", "tex"], "samples_per_type": 2}},
        "protocol_hash": "0123456789abcdef", "versions": {"acbench": "0.1.0", "torch": "2.x"},
        "git_commit": "abc", "device": "cpu", "seeds": [0, 1], "categories": list(CATEGORIES),
        "split": {"fraction": 0.333, "order": "sorted", "legacy_overlap": False},
        "weights_policy": "pretrained-or-random", "protocol_file": "protocols/unit.yaml",
    }


def write_run(root: Path, frame: pd.DataFrame, manifest_data: dict, with_samples: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest_data))
    frame.to_csv(root / "results.csv", index=False)
    if with_samples:
        rng = np.random.default_rng(0)
        for label in ("perlin", "crop-paste"):
            samples = []
            for i in range(2):
                image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                mask = np.zeros((32, 32), bool)
                mask[8:16, 8 + i:20] = True
                samples.append(Sample(image, mask, "crack", source_normal=f"bottle/train/good/00{i}.png"))
            folder = root / "artifacts" / "generate" / label.replace("/", "@") / "bottle" / "0"
            write_synthetic_set(folder, iter(samples), "bottle", label, 0)
    return root


def write_predictions(root: Path, detector: str, label: str, category: str, seed: int, labels, scores) -> Path:
    folder = root / "artifacts" / "detect" / detector / label.replace("/", "@") / category / str(seed)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"file": [f"img_{i:03d}.png" for i in range(len(labels))], "label": labels,
                          "anomaly_type": ["x" if v else "good" for v in labels], "score": scores})
    frame.to_csv(folder / "predictions.csv", index=False)
    return folder


def write_maps(root: Path, detector: str, label: str, category: str, seed: int, maps, masks) -> Path:
    """anomaly_maps.npz of one detector job, beside its predictions.csv (same file names, same order)."""
    folder = root / "artifacts" / "detect" / detector / label.replace("/", "@") / category / str(seed)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "anomaly_maps.npz", maps=np.asarray(maps, np.float32), masks=np.asarray(masks, bool),
                        files=np.array([f"img_{i:03d}.png" for i in range(len(maps))]))
    return folder / "anomaly_maps.npz"


__all__ = ["CATEGORIES", "FID", "PIXEL_AP", "manifest", "results_frame", "write_maps", "write_predictions",
           "write_run"]
