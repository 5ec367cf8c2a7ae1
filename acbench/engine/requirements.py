"""Which pretrained weights a protocol needs (plugins' `required_weights()`) and whether they are found.

Only local places are looked at (explicit path, `$TORCH_HOME`, the Hugging Face hub cache): checking
never downloads. `acbench weights check`, `acbench plan` and the pre-flight of `acbench run` use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acbench import registry
from acbench.errors import UserError
from acbench.protocol import Protocol
from acbench.weights import offline, torch_home

log = logging.getLogger(__name__)


@dataclass
class WeightStatus:
    name: str
    description: str
    needed_by: list[str] = field(default_factory=list)
    found: bool | None = None  # None: the plugin says nothing about where to find it
    bad_path: bool = False  # an explicit path was given and does not exist (never falls through to a cache)
    where: str = ""  # the path found
    looked: list[str] = field(default_factory=list)
    downloadable: bool = False
    source: str = ""  # the hub id or URL it would be downloaded from

    @property
    def state(self) -> str:
        if self.found:
            return "found"
        if self.found is None:
            return "unknown"
        return "missing (downloadable)" if self.downloadable and not offline() else "missing"


def plugin_instances(protocol: Protocol) -> list[tuple[str, Any]]:
    """(label, plugin object) for every method, detector and metric of a protocol."""
    out: list[tuple[str, Any]] = []
    for m in protocol.methods:
        cls = registry.load("methods", m.name)
        out.append((f"method {m.label}", cls(cls.Options.model_validate(m.options), weights=protocol.weights)))
    for d in protocol.detectors:
        cls = registry.load("detectors", d.name)
        out.append((f"detector {d.label}", cls(cls.Options.model_validate(d.options), preset=d.preset,
                                                weights=protocol.weights, device="cpu")))
    for name in protocol.metrics:
        out.append((f"metric {name}", registry.load("metrics", name)(weights=protocol.weights, device="cpu")))
    return out


def locate(req: Any) -> WeightStatus:
    status = WeightStatus(req.name, getattr(req, "description", ""))
    path, filename, repo_id = (getattr(req, k, None) for k in ("path", "filename", "repo_id"))
    status.downloadable = bool(getattr(req, "url", None) or repo_id)
    status.source = repo_id or getattr(req, "url", None) or ""
    candidates = []
    if path:
        explicit = Path(path).expanduser()
        if not explicit.exists():  # as in acbench.weights: a mistyped path is an error, not a cache miss
            status.found, status.bad_path, status.looked = False, True, [str(explicit)]
            return status
        candidates.append(explicit)
    if filename:
        candidates.append(torch_home() / "hub" / "checkpoints" / filename)
    for candidate in candidates:
        if candidate.exists():
            status.found, status.where = True, str(candidate)
            return status
        status.looked.append(str(candidate))
    if repo_id:
        cached = _hub_cache(repo_id)
        if cached:
            status.found, status.where = True, cached
            return status
        status.looked.append(f"hub cache for '{repo_id}'")
    status.found = False if status.looked else None
    return status


def _hub_cache(repo_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached (or no hub library): reported as missing
        return None


def check_weights(protocol: Protocol) -> list[WeightStatus]:
    """One status per distinct weight, with every plugin that needs it."""
    by_name: dict[str, WeightStatus] = {}
    for label, plugin in plugin_instances(protocol):
        for req in plugin.required_weights():
            status = by_name.get(req.name) or locate(req)
            status.needed_by.append(label)
            by_name[req.name] = status
    return list(by_name.values())


def require_weights(protocol: Protocol) -> None:
    """Under the `pretrained` policy, stop before any job if a weight can be neither found nor fetched."""
    for status in check_weights(protocol):
        if status.found is not False:
            continue
        if status.bad_path and protocol.weights != "random":
            raise UserError(f"weights '{status.name}' ({status.needed_by[0]}): the path {status.looked[0]} given "
                            "for them does not exist; correct it, or remove it to use the standard caches")
        fetchable = status.downloadable and not offline() and reachable(status.source)
        if protocol.weights == "pretrained" and not fetchable:
            source = ""
            if status.downloadable:
                source = (" and downloads are off (HF_HUB_OFFLINE / ACBENCH_OFFLINE)" if offline()
                          else f" and {status.source} cannot be reached to download them")
            raise UserError(f"weights '{status.name}' ({status.needed_by[0]}) not found (looked in: "
                            f"{'; '.join(status.looked)}){source}; put them there, or set weights: "
                            "pretrained-or-random to run with random ones")
        if protocol.weights != "random" and not fetchable:
            log.warning("weights '%s' not found (looked in: %s): %s will use random weights",
                        status.name, "; ".join(status.looked), status.needed_by[0])


def reachable(source: str, timeout: float = 8.0) -> bool:
    """Whether a weight's download source answers now (a hub repo's metadata, or a URL's headers).

    Checked once before any job, so a study that cannot fetch a weight under `pretrained` stops in
    seconds instead of failing every job that needs it.
    """
    if not source:
        return False
    try:
        if "://" in source:
            import urllib.request

            with urllib.request.urlopen(urllib.request.Request(source, method="HEAD"), timeout=timeout):
                return True
        from huggingface_hub import HfApi

        HfApi().model_info(source, timeout=timeout)
        return True
    except Exception:  # no network, DNS failure, 404, gated repo …: all mean "cannot download now"
        return False
