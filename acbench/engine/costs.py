"""Cost estimates before spending: GPU-hours and peak GPU memory per stage of a plan.

Each job's cost comes from its `cost_key` (stage:plugin[:preset]), from the first of:

1. what earlier runs measured: every finished job records `seconds`, `peak_gpu_gb` and its `cost_key`
   in its DONE.json marker, and the median of those (per generated image for generation) is used;
2. figures measured on real hardware and kept as data in `costs_measured.yaml` (device, date,
   settings and the benchmark command of each);
3. the reference figures per preset below: rough guesses for one A100-class GPU ("preset figure").

`acbench plan` says per stage which cost keys were priced from measurements and which are estimates.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from acbench.engine.plan import Job
from acbench.engine.store import MARKER, RunStore


@dataclass(frozen=True)
class Figure:
    seconds: float  # per job, or per synthetic image when `per_image`
    peak_gb: float  # peak GPU memory
    per_image: bool = False
    gpu: bool = True
    source: str = "preset figure"


# Keys are matched exactly, then as "stage:plugin", then "stage:*:preset", then "stage".
FIGURES: dict[str, Figure] = {
    "fit:anomalycontrol:sd15": Figure(3.0 * 3600, 22.0),
    "fit:anomalycontrol:tiny": Figure(60, 0.5),
    "generate:anomalycontrol:sd15": Figure(2.5, 8.0, per_image=True),
    "generate:anomalycontrol:tiny": Figure(0.05, 0.3, per_image=True),
    "fit:anomalydiffusion:ldm": Figure(8.0 * 3600, 24.0),
    "fit:anomalydiffusion:sd15": Figure(6.0 * 3600, 22.0),
    "fit:anomalydiffusion:tiny": Figure(60, 0.5),
    "generate:anomalydiffusion:ldm": Figure(3.0, 8.0, per_image=True),
    "generate:anomalydiffusion:sd15": Figure(2.5, 8.0, per_image=True),
    "generate:anomalydiffusion:tiny": Figure(0.05, 0.3, per_image=True),
    # training-free inpainting: SD-1.5 at 512 px, 50 steps, batched; SDXL at 1024 px, 30 steps, one per call
    "generate:sd-inpaint:sd15": Figure(2.0, 8.0, per_image=True),
    "generate:sd-inpaint:diag": Figure(6.0, 14.0, per_image=True),
    "generate:sd-inpaint:tiny": Figure(0.05, 0.3, per_image=True),
    "generate:sd-inpaint:tiny-diag": Figure(0.05, 0.3, per_image=True),
    # DualAnoDiff: one 5000-step LoRA training per defect type (about 5 types per MVTec AD category)
    "fit:dualanodiff:sd15": Figure(6.0 * 3600, 30.0),
    "fit:dualanodiff:tiny": Figure(30, 0.5),
    "generate:dualanodiff:sd15": Figure(5.0, 10.0, per_image=True),  # 2 branches x CFG x 100 steps
    "generate:dualanodiff:tiny": Figure(0.1, 0.3, per_image=True),
    "fit": Figure(0, 0.0, gpu=False),  # training-free methods
    "generate": Figure(0.02, 0.0, per_image=True, gpu=False),  # classic methods: CPU image ops
    "detect:patchcore:paper": Figure(600, 6.0),
    "detect:*:paper": Figure(1800, 10.0),
    "detect:*:tiny": Figure(30, 0.5),
    "detect": Figure(1800, 10.0),
    "quality:pair-stats": Figure(0.002, 0.0, per_image=True, gpu=False),
    "quality:mask-alignment": Figure(0.002, 0.0, per_image=True, gpu=False),
    "quality": Figure(0.02, 2.0, per_image=True),  # IS, FID, KID, IC-LPIPS: one forward pass per image
}


def reference_figure(key: str) -> Figure:
    parts = key.split(":")
    stage = parts[0]
    candidates = [key, ":".join(parts[:2])] + ([f"{stage}:*:{parts[2]}"] if len(parts) > 2 else []) + [stage]
    return next(FIGURES[c] for c in candidates if c in FIGURES)


CALIBRATION_FILE = Path(__file__).with_name("costs_measured.yaml")


@cache
def calibrated_figures(path: Path = CALIBRATION_FILE) -> dict[str, Figure]:
    """The hardware measurements of `costs_measured.yaml`, by cost key."""
    out = {}
    for entry in yaml.safe_load(path.read_text())["figures"]:
        key = entry["key"]
        peak = entry.get("peak_gb", reference_figure(key).peak_gb)
        how = "measured" if entry.get("basis", "measured") == "measured" else "scaled from a measurement"
        out[key] = Figure(float(entry["seconds"]), float(peak), bool(entry.get("per_image", False)),
                          source=f"{how} on {entry['device']}, {entry['date']}")
    return out


def is_measured(figure: Figure) -> bool:
    """False for the preset guesses; True for run timings and hardware measurements."""
    return figure.source != FIGURES["fit"].source


def measured_figures(run_dirs: Iterable[Path]) -> dict[str, Figure]:
    """Median timings per cost key from the DONE.json markers of earlier runs."""
    seconds: dict[str, list[float]] = {}
    peaks: dict[str, list[float]] = {}
    per_image: dict[str, bool] = {}
    for run in run_dirs:
        for marker in (Path(run) / "artifacts").rglob(MARKER):
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            key, secs = info.get("cost_key"), info.get("seconds")
            if not key or secs is None:
                continue
            images = info.get("pairs") or info.get("n_images")
            per_image[key] = bool(images)
            seconds.setdefault(key, []).append(float(secs) / images if images else float(secs))
            peaks.setdefault(key, []).append(float(info.get("peak_gpu_gb") or 0.0))
    return {k: Figure(statistics.median(v), max(peaks[k]), per_image[k], gpu=max(peaks[k]) > 0 or
                      reference_figure(k).gpu, source=f"measured ({len(v)} jobs)")
            for k, v in seconds.items()}


@dataclass
class StageEstimate:
    stage: str
    jobs: int = 0
    pending: int = 0
    gpu_hours: float = 0.0  # of the pending jobs
    cpu_hours: float = 0.0
    peak_gb: float = 0.0
    sources: set[str] | None = None
    measured_gpu_hours: float = 0.0  # the part of gpu_hours priced from measurements
    keys: dict[str, str] = field(default_factory=dict)  # cost key -> where its figure comes from


def job_figures(job: Job, measured: dict[str, Figure]) -> list[tuple[Figure, str]]:
    key = job.params.get("cost_key", job.stage)
    calibrated = calibrated_figures()
    if key in measured:
        return [(measured[key], key)]
    if job.stage == "quality":  # one figure per metric, so a protocol's metric mix is priced right
        stage, _, names = key.partition(":")
        return [(measured.get(f"{stage}:{n}") or calibrated.get(f"{stage}:{n}") or reference_figure(f"{stage}:{n}"),
                 f"{stage}:{n}") for n in names.split("+")]
    return [(calibrated.get(key) or reference_figure(key), key)]


def estimate(jobs: list[Job], images_per_job: dict[str, int], measured: dict[str, Figure],
             store: RunStore | None = None, gpus_per_job: float = 0) -> list[StageEstimate]:
    """Per stage: job counts, hours still to spend (done jobs excluded) and peak GPU memory."""
    stages: dict[str, StageEstimate] = {}
    for job in jobs:
        est = stages.setdefault(job.stage, StageEstimate(job.stage, sources=set()))
        est.jobs += 1
        done = store is not None and store.is_done(job)
        for fig, key in job_figures(job, measured):
            est.peak_gb = max(est.peak_gb, fig.peak_gb)
            est.sources.add(fig.source)  # type: ignore[union-attr]
            est.keys[key] = fig.source
            if done:
                continue
            hours = fig.seconds * (images_per_job.get(job.id, 1) if fig.per_image else 1) / 3600
            if fig.gpu:
                est.gpu_hours += hours * max(gpus_per_job, 1)
                est.measured_gpu_hours += hours * max(gpus_per_job, 1) if is_measured(fig) else 0.0
            else:
                est.cpu_hours += hours
        est.pending += 0 if done else 1
    return list(stages.values())
