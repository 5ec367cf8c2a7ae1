"""Checks made before the first job runs, so a user mistake costs seconds, not a night of GPU time."""

from __future__ import annotations

from acbench.data import dataset_root
from acbench.data.mvtec import category_problems
from acbench.engine.requirements import require_weights
from acbench.errors import UserError
from acbench.protocol import Protocol


def check_data(protocol: Protocol, categories: list[str]) -> None:
    """Layout of every category: masks present, mask sizes equal image sizes, image headers readable."""
    root = dataset_root(protocol.dataset)
    for category in categories:
        problems = category_problems(root, category, deep=True)
        if problems:
            more = f" (and {len(problems) - 1} more: run 'acbench data check {root}')" if len(problems) > 1 else ""
            raise UserError(problems[0] + more)


def check_plugins(protocol: Protocol) -> None:
    """Each plugin's own checks of its options (folders it names exist and hold files, …)."""
    from acbench.engine.requirements import plugin_instances

    for _label, plugin in plugin_instances(protocol):
        check = getattr(plugin, "check", None)
        if callable(check):
            check()


def check_trackers(protocol: Protocol) -> None:
    from acbench.report.trackers import missing_trackers

    missing = missing_trackers(protocol.report.trackers)
    if missing:
        raise UserError(f"report.trackers: {', '.join(missing)} not installed; pip install 'acbench[trackers]' "
                        f"(or {' '.join(missing)}), or remove it from the protocol")


def preflight(protocol: Protocol, categories: list[str]) -> None:
    check_trackers(protocol)
    check_data(protocol, categories)
    check_plugins(protocol)
    require_weights(protocol)
