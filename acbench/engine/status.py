"""`acbench status RUN_DIR`: which jobs of a run are done, running, failed or pending.

Read from the run folder alone (the plan recorded in manifest.json, the DONE.json markers, the error
records in logs/, the lock), so it works while a study runs and after it was killed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from acbench.engine.store import RunStore
from acbench.engine.worker import job_error_path
from acbench.errors import UserError

STATES = ("done", "running", "failed", "pending")


@dataclass
class RunStatus:
    root: Path
    live: bool  # a run holds the lock now
    jobs: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in STATES})
    errors: dict[str, str] = field(default_factory=dict)  # failed job -> first line of its error

    def counts(self) -> dict[str, int]:
        return {state: len(ids) for state, ids in self.jobs.items()}


def run_status(run_dir: str | Path) -> RunStatus:
    root = Path(run_dir)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise UserError(f"{root}: not a run folder (no manifest.json); give the folder `acbench run` wrote")
    try:
        plan = json.loads(manifest.read_text())["plan"]
    except (ValueError, KeyError):
        raise UserError(f"{manifest}: no job plan recorded (written by an older acbench); re-run the study") \
            from None
    store = RunStore(root)
    status = RunStatus(root, store.is_locked())
    for job in plan:
        error = job_error_path(store, job["id"])
        if store.has_marker(job["id"], job["hash"]):
            state = "done"
        elif status.live and store.in_progress(job["id"]):
            state = "running"
        elif error.is_file():
            state = "failed"
            status.errors[job["id"]] = _last_line(error)
        else:
            state = "pending"
        status.jobs[state].append(job["id"])
    return status


def _last_line(path: Path) -> str:
    """A traceback's last line is the exception and its message."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""
