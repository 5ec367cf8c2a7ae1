"""Planning: a protocol becomes a list of jobs (stage x method x category x seed) with dependencies.

    fit ─► generate ─► quality
                  └──► detect (one per detector)
    detect (detectors that use no synthetic data: once per category x seed, method "none")

Each job's config hash covers everything its output depends on, including its dependencies'
hashes, so changing a method option re-runs that method's jobs and nothing else: the dataset section
(with the dataset root as an absolute path), the plugin's options, where each of its pretrained weights
was found (or that it will be random), the device kind the jobs run on, and, for a dataset-scope fit,
the list of categories it trains on (adding a category re-runs that fit and everything built on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from acbench import registry
from acbench.protocol import Protocol, config_hash

NO_METHOD = "none"
ALL_CATEGORIES = "_all"


@dataclass(frozen=True)
class Job:
    stage: str  # fit | generate | quality | detect
    method: str  # method label ("name" or "name/variant"), or NO_METHOD
    category: str  # a category, or ALL_CATEGORIES for a dataset-scope fit
    seed: int
    detector: str = ""
    deps: tuple[str, ...] = ()
    hash: str = ""
    # Plain data only, so a job can be shipped to another process or machine.
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        parts = [self.stage] + ([self.detector] if self.detector else []) + [self.method, self.category,
                                                                           str(self.seed)]
        return "/".join(_safe_part(p) for p in parts)

    @property
    def relpath(self) -> PurePosixPath:
        return PurePosixPath("artifacts", self.id)


def _safe_part(part: str) -> str:
    """One path component: labels come from protocols, so '/' and '..' must not reach the file system."""
    part = part.replace("/", "@").replace("\\", "@")
    return part if part.strip(".") else part.replace(".", "@") or "@"


def cost_key(stage: str, plugin: str, preset: str = "") -> str:
    """What a job's cost depends on most: stage, plugin and size preset (`acbench plan` groups by it)."""
    return f"{stage}:{plugin}:{preset}" if preset else f"{stage}:{plugin}"


def _preset(options: dict[str, Any]) -> str:
    return str(options.get("model") or options.get("preset") or "")


def _method_index(protocol: Protocol) -> dict[str, int]:
    return {m.label: i for i, m in enumerate(protocol.methods)}


def device_kind(device: str) -> str:
    """What of a device changes numbers: 'cuda:1' and 'cuda:0' compute alike, 'cpu' and 'cuda' do not."""
    return device.split(":")[0]


def dataset_identity(protocol: Protocol) -> dict[str, Any]:
    """The dataset section as it affects results: the root made absolute, the category list left out."""
    cfg = protocol.dataset.model_dump(mode="json")
    cfg["categories"] = None  # adding a category must not invalidate the others' per-category jobs
    if protocol.dataset.root is not None:
        cfg["root"] = str(Path(protocol.dataset.root).expanduser().resolve())
    return cfg


def weights_identity(plugin: Any, policy: str) -> list[Any]:
    """Where each pretrained weight of a plugin is found now: a weight that appears in the cache (under
    `pretrained-or-random`) or moves changes the jobs that use it."""
    if policy == "random":
        return []
    from acbench.engine.requirements import locate

    return sorted([req.name, locate(req).where or "missing"] for req in plugin.required_weights())


def plan(protocol: Protocol, categories: list[str], device: str = "cpu") -> list[Job]:
    """All jobs of a study in an order that respects dependencies; `device` is where they will run."""
    from acbench.engine.requirements import plugin_instances

    jobs: list[Job] = []
    data_cfg = dataset_identity(protocol)
    weights = {label: weights_identity(plugin, protocol.weights) for label, plugin in plugin_instances(protocol)}
    kind = device_kind(device)

    def det_cfg(det: Any) -> list[Any]:
        return [det.model_dump(mode="json"), weights[f"detector {det.label}"]]

    def add(stage: str, method: str, category: str, seed: int, deps: list[Job], payload: Any,
            detector: str = "", **params: Any) -> Job:
        h = config_hash([stage, payload, [d.hash for d in deps], category, seed, protocol.weights, kind])
        job = Job(stage, method, category, seed, detector, tuple(d.id for d in deps), h, params)
        jobs.append(job)
        return job

    for seed in protocol.seeds:
        for m_index, method in enumerate(protocol.methods):
            scope = getattr(registry.load("methods", method.name), "fit_scope", "none")
            m_cfg = [method.model_dump(mode="json"), weights[f"method {method.label}"]]
            dataset_fit = None
            if scope == "dataset":  # trains on every category: the list is part of what it reads
                dataset_fit = add("fit", method.label, ALL_CATEGORIES, seed, [],
                                  [data_cfg, m_cfg, sorted(categories)],
                                  method_index=m_index, categories=categories,
                                  cost_key=cost_key("fit", method.name, _preset(method.options)))
            for cat in categories:
                fit_deps = [dataset_fit] if dataset_fit else []
                if scope == "category":
                    fit_deps = [add("fit", method.label, cat, seed, [], [data_cfg, m_cfg],
                                    method_index=m_index, categories=[cat],
                                    cost_key=cost_key("fit", method.name, _preset(method.options)))]
                gen = add("generate", method.label, cat, seed, fit_deps,
                          [data_cfg, m_cfg, protocol.generation.model_dump(mode="json")],
                          method_index=m_index, fit=fit_deps[0].id if fit_deps else None,
                          cost_key=cost_key("generate", method.name, _preset(method.options)))
                if protocol.metrics:
                    add("quality", method.label, cat, seed, [gen],
                        [data_cfg, protocol.metrics, [weights[f"metric {m}"] for m in protocol.metrics]],
                        metrics=list(protocol.metrics), cost_key=cost_key("quality", "+".join(protocol.metrics)))
                for d_index, det in enumerate(protocol.detectors):
                    if _uses_synthetic(det.name):
                        add("detect", method.label, cat, seed, [gen], [data_cfg, det_cfg(det)],
                            detector=det.label, detector_index=d_index,
                            cost_key=cost_key("detect", det.name, det.preset))
        for cat in categories:
            for d_index, det in enumerate(protocol.detectors):
                if not _uses_synthetic(det.name):
                    add("detect", NO_METHOD, cat, seed, [], [data_cfg, det_cfg(det)],
                        detector=det.label, detector_index=d_index,
                        cost_key=cost_key("detect", det.name, det.preset))
    return jobs


def _uses_synthetic(detector: str) -> bool:
    return bool(getattr(registry.load("detectors", detector), "uses_synthetic", True))
