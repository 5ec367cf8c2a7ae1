"""Cost of deciding the report's marks of image AUROC / AP and pixel AUROC / AP by the paired bootstrap
over test images.

Builds a run folder of hand-made detector outputs (predictions.csv and anomaly_maps.npz per method x
category x seed, the matching result rows) and times the report's tables (every metric grid and the
summary) with and without the test over images. Defaults are demo-sized (17 methods, 3 categories, 26
test images of 64 x 64 pixels); `--categories 15 --anomalies 80 --normals 40` is about MVTec AD's size.

    python benchmarks/report_ranking.py [--methods 17 --categories 3 --seeds 1 --anomalies 18 --normals 8
                                         --size 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from acbench.report.formats import metric_grid
from acbench.report.headline import headline_grid
from acbench.report.load import prepare
from acbench.report.significance import RunPredictions, attach_image_tests
from acbench.report.tables import MEAN_ROW, build_tables

DETECTOR = "unet-localization"


def make_run(root: Path, methods: int, categories: int, seeds: int, n_pos: int, n_neg: int,
             size: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    masks = np.zeros((labels.size, size, size), bool)
    for i in range(n_pos):  # one square defect per anomalous image
        y, x = rng.integers(0, size * 3 // 4, 2)
        masks[i, y:y + size // 4, x:x + size // 4] = True
    rows = []
    for m in range(methods):
        strength = rng.uniform(0.0, 2.0)  # methods from chance to good detectors
        for c in range(categories):
            for seed in range(seeds):
                scores = labels * strength + rng.normal(0, 1, labels.size)
                folder = root / "artifacts" / "detect" / DETECTOR / f"m{m:02d}" / f"c{c:02d}" / str(seed)
                folder.mkdir(parents=True, exist_ok=True)
                files = [f"{i:03d}.png" for i in range(labels.size)]
                pd.DataFrame({"file": files, "label": labels, "score": scores}).to_csv(folder / "predictions.csv",
                                                                                        index=False)
                maps = (masks * strength + rng.normal(0, 1, masks.shape)).astype(np.float32)
                np.savez_compressed(folder / "anomaly_maps.npz", maps=maps, masks=masks, files=np.array(files))
                base = {"method": f"m{m:02d}", "variant": "", "category": f"c{c:02d}", "seed": seed,
                        "stage": "detect", "detector": DETECTOR, "anomaly_type": "", "scope": "image"}
                rows.append(base | {"metric": "image_auroc", "value": roc_auc_score(labels, scores)})
                rows.append(base | {"metric": "image_ap", "value": average_precision_score(labels, scores)})
                for metric, fn in (("pixel_auroc", roc_auc_score), ("pixel_ap", average_precision_score)):
                    rows.append(base | {"metric": metric, "value": fn(masks.ravel(), maps.ravel()), "scope": "pixel"})
    return prepare(pd.DataFrame(rows))


def render_tables(root: Path, frame: pd.DataFrame, image_test: bool) -> tuple[float, int]:
    """Seconds to build, rank and lay out every table and the summary; marked cells of the mean rows."""
    start = time.perf_counter()
    tables = build_tables(frame)
    if image_test:
        attach_image_tests(tables, RunPredictions(root, frame))
    for table in tables:
        metric_grid(table)
    headline_grid(tables)
    marked = sum(len(t.ranks(MEAN_ROW)) for t in tables)
    return time.perf_counter() - start, marked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", type=int, default=17)
    parser.add_argument("--categories", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--anomalies", type=int, default=18)
    parser.add_argument("--normals", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="side of the anomaly maps in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = make_run(root, args.methods, args.categories, args.seeds, args.anomalies, args.normals,
                         args.size)
        seeds_only, marked_seeds = render_tables(root, frame, image_test=False)
        with_images, marked_images = render_tables(root, frame, image_test=True)
    print(json.dumps({"benchmark": "report_ranking", **vars(args),
                      "seconds_seeds_only": round(seeds_only, 3), "seconds_with_image_test": round(with_images, 3),
                      "mean_row_marks_seeds_only": marked_seeds, "mean_row_marks_with_image_test": marked_images}))


if __name__ == "__main__":
    main()
