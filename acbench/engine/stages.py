"""What each job stage does. `execute_job` takes only plain data (protocol dict, run folder, job), so
an executor can run it in this process, a worker process, or on another machine."""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from acbench import registry
from acbench.data import dataset_root
from acbench.data.category import CategoryData
from acbench.data.mvtec import load_category, resolve_categories
from acbench.engine.plan import NO_METHOD, Job
from acbench.engine.store import RunStore
from acbench.errors import UserError
from acbench.masks.base import fallback_counts, reset_fallbacks
from acbench.protocol import Protocol
from acbench.synthesis import GenerationRequest, SyntheticSet, write_synthetic_set

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def study_device(protocol: Protocol) -> str:
    """The one device every job of a study runs on, decided here, before any job starts.

    `auto` is resolved once, on this machine, and the result is handed to every job (and is part of
    every job hash), so a job never quietly computes on another device than the plan says. Ray hides
    the GPUs from a task that asks for none (`gpus_per_job: 0`): `auto` there would mean CPU in the
    workers and CUDA here, so it is refused on a machine that has GPUs.
    """
    cfg = protocol.executor
    if cfg.device != "auto":
        return cfg.device
    if cfg.kind == "local":
        return resolve_device("auto")
    if cfg.gpus_per_job > 0:
        return "cuda"
    import torch

    if cfg.kind == "ray" and torch.cuda.is_available() and torch.cuda.device_count() > 0:
        raise UserError("executor.device: 'auto' with gpus_per_job: 0 would run the Ray jobs on the CPU (Ray hides "
                        "the GPUs from them) although this machine has GPUs; set gpus_per_job (e.g. 1) or "
                        "device: cpu")
    return "cpu"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@lru_cache(maxsize=64)
def _category(protocol_json: str, category: str) -> CategoryData:
    protocol = Protocol.model_validate_json(protocol_json)
    cfg = protocol.dataset
    return load_category(dataset_root(cfg), category, cfg.split, dataset=cfg.kind,
                         image_size=cfg.image_size, type_texts=cfg.type_texts)


def category_data(protocol: Protocol, category: str) -> CategoryData:
    return _category(protocol.model_dump_json(), category)


def study_categories(protocol: Protocol) -> list[str]:
    return resolve_categories(dataset_root(protocol.dataset), protocol.dataset.categories)


def _context(protocol: Protocol, job: Job) -> dict[str, Any]:
    if job.method == NO_METHOD:
        name, variant = NO_METHOD, ""
    else:
        method = protocol.methods[[m.label for m in protocol.methods].index(job.method)]
        name, variant = method.name, method.variant or ""
    return {"method": name, "variant": variant, "category": job.category, "seed": job.seed,
            "stage": job.stage, "detector": job.detector}


def execute_job(protocol: Protocol, store: RunStore, job: Job, device: str = "cpu",
                progress: Progress | None = None) -> None:
    """Run one job and commit its artifact atomically."""
    seed_everything(job.seed)
    tmp = store.begin(job)
    try:
        started = time.perf_counter()
        _reset_gpu_peak(device)
        rows, info = STAGES[job.stage](protocol, store, job, tmp, device, progress)
        # Timings feed the cost estimates of later plans (`acbench plan`).
        info = {**info, "seconds": round(time.perf_counter() - started, 3), "device": device,
                "threads": _threads(),
                "peak_gpu_gb": _gpu_peak_gb(device), "cost_key": job.params.get("cost_key", job.stage)}
        context = _context(protocol, job)
        store.commit(job, tmp, [{**context, **r} for r in rows], info)
    finally:
        if tmp.exists():  # the job failed before its commit: nothing half-written stays
            shutil.rmtree(tmp, ignore_errors=True)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _reset_gpu_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def _gpu_peak_gb(device: str) -> float:
    if not device.startswith("cuda"):
        return 0.0
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def _method(protocol: Protocol, job: Job):
    cfg = protocol.methods[job.params["method_index"]]
    cls = registry.load("methods", cfg.name)
    return cls(cls.Options.model_validate(cfg.options), weights=protocol.weights)


def _fit(protocol: Protocol, store: RunStore, job: Job, tmp: Path, device: str, progress):
    synth = _method(protocol, job)
    categories = [category_data(protocol, c) for c in job.params["categories"]]
    synth.fit(categories, tmp, seed=job.seed, device=device)
    return [], {"provenance": synth.provenance()}


def _generate(protocol: Protocol, store: RunStore, job: Job, tmp: Path, device: str, progress):
    synth = _method(protocol, job)
    data = category_data(protocol, job.category)
    fit_dir = store.path(job.params["fit"]) if job.params.get("fit") else None
    per_type = protocol.generation.per_type
    types = sorted(data.synthesis)
    total, done = per_type * len(types), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    def samples():
        for atype in types:
            request = GenerationRequest(atype, per_type, job.seed, fit_dir=fit_dir, device=device)
            yield from synth.generate(data, request)

    reset_fallbacks()
    count = write_synthetic_set(tmp, samples(), data.category, job.method, job.seed, progress=tick)
    if count == 0:
        raise UserError(f"method '{job.method}' produced an empty synthetic set for category "
                        f"'{job.category}'; check its options")
    # a type with too few real anomalies for the split (k = 0) has nothing to learn from: not generated
    not_generated = sorted(set(data.eval_anomalies) - set(data.synthesis))
    if not_generated:
        log.warning("%s: types %s have no synthesis example (too few real anomalies for the split); "
                    "they are evaluated but not generated", data.category, ", ".join(not_generated))
    info = {"provenance": synth.provenance(), "pairs": count, "fallbacks": fallback_counts(),
            "types_not_generated": not_generated}
    return [], info


def _synthetic(store: RunStore, job: Job) -> SyntheticSet:
    return SyntheticSet(store.path(job.deps[0]))


#: Fallbacks of the generate job carried into the rows built on its pairs (column: count).
FALLBACK_COLUMNS = {"fallback_mask": "n_fallback_masks", "whole_image_foreground": "n_whole_image_foreground"}


def _weights_flag(protocol: Protocol, store: RunStore, job: Job) -> dict[str, Any]:
    """Carry into every downstream row: 'random weights' of the generator, the columns its provenance asks
    for (`row_tags`, e.g. which preset produced the images), how many of its masks were fallbacks, and
    box-shaped synthetic masks."""
    extra = {}
    for dep in job.deps:
        marker = store.path(dep) / "DONE.json"
        if marker.is_file():
            info = json.loads(marker.read_text())
            if info.get("provenance", {}).get("random_weights"):
                extra["generator_weights"] = "random"
            extra.update({str(k): str(v) for k, v in (info.get("provenance", {}).get("row_tags") or {}).items()})
            if "fallbacks" in info:
                extra.update({column: int(info["fallbacks"].get(kind, 0))
                              for kind, column in FALLBACK_COLUMNS.items()})
                extra["types_not_generated"] = ";".join(info.get("types_not_generated", []))
        if (store.path(dep) / "index.csv").is_file() and "box" in SyntheticSet(store.path(dep)).mask_kinds:
            extra["synthetic_masks"] = "box"
    return extra


def _quality(protocol: Protocol, store: RunStore, job: Job, tmp: Path, device: str, progress):
    synthetic = _synthetic(store, job)
    data = category_data(protocol, job.category)
    rows = []
    flags = _weights_flag(protocol, store, job)
    for i, name in enumerate(job.params["metrics"]):
        metric = registry.load("metrics", name)(weights=protocol.weights, device=device)
        rows += [v.row(**flags) for v in metric.score(synthetic, data)]
        if progress:
            progress(i + 1, len(job.params["metrics"]))
    return rows, {}


def _detect(protocol: Protocol, store: RunStore, job: Job, tmp: Path, device: str, progress):
    cfg = protocol.detectors[job.params["detector_index"]]
    cls = registry.load("detectors", cfg.name)
    detector = cls(cls.Options.model_validate(cfg.options), preset=cfg.preset, weights=protocol.weights,
                   device=device)
    synthetic = _synthetic(store, job) if job.deps else None
    data = category_data(protocol, job.category)
    values = detector.run(data, synthetic, tmp, job.seed, progress)
    flags = _weights_flag(protocol, store, job)
    return [v.row(**flags) for v in values], {}


STAGES = {"fit": _fit, "generate": _generate, "quality": _quality, "detect": _detect}
