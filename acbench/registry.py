"""Plugin registry: methods, detectors, metrics and mask sources are found through entry-point groups.

The harness never imports a plugin by name; a third-party package adds one by declaring an entry
point in `acbench.methods`, `acbench.detectors`, `acbench.metrics` or `acbench.masks`.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal

from acbench.errors import UserError, did_you_mean

Kind = Literal["methods", "detectors", "metrics", "masks"]
KINDS: tuple[Kind, ...] = ("methods", "detectors", "metrics", "masks")


@cache
def _entry_points(kind: Kind) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=f"acbench.{kind}")}


def names(kind: Kind) -> list[str]:
    """Registered plugin names of a kind, sorted."""
    return sorted(_entry_points(kind))


def load(kind: Kind, name: str) -> Any:
    """The plugin class registered under `name`; a UserError with a suggestion when unknown."""
    eps = _entry_points(kind)
    if name not in eps:
        singular = kind[:-1]
        known = ", ".join(sorted(eps)) or "none installed"
        raise UserError(f"unknown {singular} '{name}'{did_you_mean(name, eps)}; known: {known}")
    return eps[name].load()
