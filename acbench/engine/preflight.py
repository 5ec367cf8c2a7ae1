"""Checks made before the first job runs, so a user mistake costs seconds, not a night of GPU time."""

from __future__ import annotations

from acbench.data import open_layout
from acbench.engine.requirements import require_weights
from acbench.errors import UserError
from acbench.protocol import Protocol


def check_data(protocol: Protocol, categories: list[str]) -> None:
    """Layout of every category, read by the protocol's reader (`dataset.kind`): split files present,
    masks present, mask sizes equal image sizes, image headers readable."""
    layout = open_layout(protocol.dataset)
    for category in categories:
        problems = layout.problems(category, deep=True)
        if problems:
            more = (f" (and {len(problems) - 1} more: run 'acbench data check {layout.root} --kind {layout.kind}')"
                    if len(problems) > 1 else "")
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
