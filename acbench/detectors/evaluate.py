"""`acbench evaluate detection`: one detector on one category with a user's own synthetic set.

The same code is the detector stage of a study (`acbench.engine.stages`): load the split category,
build the detector with its validated options, run it into a work folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from acbench import registry
from acbench.data.mvtec import load_category, resolve_categories
from acbench.errors import UserError
from acbench.protocol import SplitConfig
from acbench.synthesis import SyntheticSet


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """['synthetic_ratio=0.25', 'n_synthetic=30'] -> {'synthetic_ratio': 0.25, 'n_synthetic': 30}."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--option '{pair}': write KEY=VALUE, e.g. --option synthetic_ratio=0.25")
        options[key.strip()] = yaml.safe_load(value)
    return options


def evaluate_detection(dataset: Path, category: str, detector: str, synthetic: Path | None = None,
                       preset: str = "tiny", options: dict[str, Any] | None = None, seed: int = 0,
                       weights: str = "pretrained", device: str = "auto", workdir: Path | None = None,
                       split: SplitConfig | None = None) -> list[dict[str, Any]]:
    """Train and evaluate; returns result rows (the columns of results.csv) and writes raw outputs."""
    cls = registry.load("detectors", detector)
    if preset not in cls.presets:
        raise UserError(f"--preset '{preset}' is unknown for {detector}; use one of {', '.join(cls.presets)}")
    try:
        opts = cls.Options.model_validate(options or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        raise UserError(f"--option {where}: {err['msg']}") from None
    resolve_categories(dataset, [category])
    data = load_category(dataset, category, split or SplitConfig())
    synthetic_set = None
    if cls.uses_synthetic:
        if synthetic is None:
            raise UserError(f"--synthetic: detector '{detector}' trains on a synthetic set; give its folder")
        synthetic_set = SyntheticSet(synthetic)
    workdir = workdir or Path("runs") / "evaluate" / f"{detector}-{category}-seed{seed}"
    instance = cls(opts, preset=preset, weights=weights, device=device)
    start = time.time()
    values = instance.run(data, synthetic_set, workdir, seed)
    seconds = round(time.time() - start, 1)
    method = synthetic_set.records[0].method if synthetic_set is not None else "none"
    return [v.row(method=method, category=category, seed=seed, stage="detect", detector=detector,
                  seconds=seconds, workdir=str(workdir)) for v in values]
