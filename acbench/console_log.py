"""The console shows each distinct warning once per command; repeats are counted, not printed.

A study runs the same plugin code in many jobs, so the same warning ("RANDOM WEIGHTS for …") would
otherwise fill the terminal. The run's log files keep every occurrence: only console handlers get the
filter.
"""

from __future__ import annotations

import logging
from collections import Counter


class OncePerMessage(logging.Filter):
    """Let each distinct (level, logger, message) through once; count the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[tuple[int, str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.name, record.getMessage())
        self.seen[key] += 1
        return self.seen[key] == 1

    def repeated(self) -> list[tuple[str, int]]:
        """(message, times seen) for every message seen more than once, most frequent first."""
        return [(msg, n) for (_lvl, _name, msg), n in self.seen.most_common() if n > 1]


_FILTER = OncePerMessage()


def install(handlers: list[logging.Handler]) -> OncePerMessage:
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    return _FILTER


def repeated_summary(limit: int = 80) -> list[str]:
    """One line per repeated warning, e.g. "RANDOM WEIGHTS for fid-inception-v3 … (12 times)"."""
    out = []
    for msg, n in _FILTER.repeated():
        first = msg.splitlines()[0] if msg else ""
        out.append(f"{first[:limit]}{'…' if len(first) > limit else ''} ({n} times)")
    return out
