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


def describe(kind: Kind, name: str) -> str:
    """A plugin's one-line `description`, read from its source when possible (no import).

    Listing plugins must not import every network library a method uses (seconds each): the class
    attribute is found by parsing the module that defines the class, following re-exports. A plugin
    whose description is computed or inherited is imported as usual.
    """
    eps = _entry_points(kind)
    if name not in eps:
        load(kind, name)  # the usual one-line error
    module, _, attr = eps[name].value.partition(":")
    text = _static_description(module, attr.strip())
    return text if text is not None else getattr(load(kind, name), "description", "")


def _module_file(module: str):
    """The source file of a dotted module, found without executing any of its packages."""
    import importlib.util
    from pathlib import Path

    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # top-level only: its __init__ is not executed by find_spec
    if spec is None or not spec.submodule_search_locations and rest:
        return None, False
    if not rest:
        origin = Path(spec.origin) if spec.origin else None
        return origin, bool(spec.submodule_search_locations)
    for base in spec.submodule_search_locations or []:
        path = Path(base, *rest)
        if (path / "__init__.py").is_file():
            return path / "__init__.py", True
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py"), False
    return None, False


def _static_description(module: str, attr: str, depth: int = 0) -> str | None:
    import ast

    path, is_package = _module_file(module)
    if depth > 4 or path is None or path.suffix != ".py":
        return None
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == attr:
            for stmt in node.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else \
                    [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
                value = getattr(stmt, "value", None)
                if any(isinstance(t, ast.Name) and t.id == "description" for t in targets) \
                        and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return value.value
            return None
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == attr:
                    package = module if is_package else module.rpartition(".")[0]
                    for _ in range(max(node.level - 1, 0)):
                        package = package.rpartition(".")[0]
                    target = f"{package}.{node.module}" if node.level and node.module else \
                        package if node.level else node.module
                    return _static_description(target, alias.name, depth + 1) if target else None
    return None
