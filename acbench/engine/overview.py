"""`acbench plan`: a study's jobs, the weights they need, and what it will cost, before it runs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from acbench.data import dataset_root
from acbench.data.mvtec import scan_category
from acbench.engine.costs import StageEstimate, estimate, measured_figures
from acbench.engine.plan import Job, plan
from acbench.engine.requirements import WeightStatus, check_weights
from acbench.engine.stages import study_categories, study_device
from acbench.engine.store import RunStore
from acbench.protocol import Protocol


@dataclass
class StudyPlan:
    jobs: list[Job]
    done: set[str]
    weights: list[WeightStatus]
    stages: list[StageEstimate]
    history: list[Path]

    def as_dict(self) -> dict:
        return {
            "jobs": [{"id": j.id, "stage": j.stage, "deps": list(j.deps), "done": j.id in self.done}
                     for j in self.jobs],
            "weights": [{"name": w.name, "needed_by": w.needed_by, "state": w.state, "where": w.where,
                         "looked": w.looked} for w in self.weights],
            "estimate": [{"stage": s.stage, "jobs": s.jobs, "pending": s.pending,
                          "gpu_hours": round(s.gpu_hours, 3), "cpu_hours": round(s.cpu_hours, 3),
                          "peak_gpu_gb": s.peak_gb, "basis": sorted(s.sources or [])} for s in self.stages],
            "history": [str(p) for p in self.history],
        }


def earlier_runs(out: Path, extra: Iterable[Path] = ()) -> list[Path]:
    """The run folder itself, its siblings (e.g. everything under runs/) and any given folders."""
    candidates = [out, *extra]
    if out.parent.is_dir():
        candidates += sorted(p for p in out.parent.iterdir() if p.is_dir())
    seen, runs = set(), []
    for path in candidates:
        key = path.resolve()
        if key not in seen and (path / "artifacts").is_dir():
            seen.add(key)
            runs.append(path)
    return runs


def images_per_job(protocol: Protocol, jobs: list[Job]) -> dict[str, int]:
    """Synthetic images each generate / quality job handles: per_type x the category's defect types."""
    root = dataset_root(protocol.dataset)
    types = {cat: len(scan_category(root, cat).defects) for cat in {j.category for j in jobs
                                                                      if j.stage in ("generate", "quality")}}
    return {j.id: protocol.generation.per_type * types[j.category] for j in jobs if j.category in types}


def plan_study(protocol: Protocol, out: str | Path | None = None, history: Iterable[Path] = ()) -> StudyPlan:
    out_dir = Path(out or protocol.output_dir())
    jobs = plan(protocol, study_categories(protocol), study_device(protocol))
    store = RunStore(out_dir) if out_dir.is_dir() else None
    done = {j.id for j in jobs if store is not None and store.is_done(j)}
    runs = earlier_runs(out_dir, history)
    stages = estimate(jobs, images_per_job(protocol, jobs), measured_figures(runs), store,
                      protocol.executor.gpus_per_job)
    return StudyPlan(jobs, done, check_weights(protocol), stages, runs)
