"""The run store: one folder per study, with atomic artifacts, resume, and a lock.

    <run>/manifest.json                  resolved protocol, hash, versions, device, seeds, times
    <run>/artifacts/<job id>/            one finished job: its files + DONE.json (config hash)
    <run>/results.csv                    long format, collected from every finished artifact
    <run>/report/                        rendered report
    <run>/logs/                          run.log, one log per job, tracebacks of failed jobs

An artifact is built in a hidden temporary folder beside its final place and renamed into place
with its marker already inside, so a folder with DONE.json is complete by construction; anything
else (a crash mid-job, a kill -9) leaves only a temporary folder that the next run removes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from acbench.data.io import atomic_write_text
from acbench.engine.plan import Job
from acbench.errors import UserError

MARKER = "DONE.json"
ROWS = "rows.json"


class RunStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock_fh = None

    # -- locking ---------------------------------------------------------------------------- #
    def lock(self) -> None:
        """Refuse a second concurrent run on the same folder. The OS releases the lock when the
        holding process dies, so a stale lock from a killed run is taken over automatically."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root}: the run folder is an existing file; choose another --out (or output:)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.root / ".lock", "a+")
        except PermissionError:
            raise UserError(f"{self.root}: the run folder cannot be written (permission denied); choose another "
                            "--out or fix its permissions") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"{self.root}: run folder is locked by a live run ({holder}); wait for it "
                                "to finish or use another --out") from None
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._lock_fh = fh

    def is_locked(self) -> bool:
        """Whether a live run holds this folder's lock (without taking it)."""
        path = self.root / ".lock"
        if not path.is_file():
            return False
        with open(path) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # -- artifacts -------------------------------------------------------------------------- #
    def path(self, job: Job | str) -> Path:
        rel = job.relpath if isinstance(job, Job) else Path("artifacts", job)
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root.resolve()):  # names come from protocols: stay inside
            raise UserError(f"job '{rel}' would write outside the run folder {self.root}")
        return self.root / rel

    def is_done(self, job: Job) -> bool:
        return self.has_marker(job.id, job.hash)

    def has_marker(self, job_id: str, config_hash: str) -> bool:
        """A finished artifact of this exact configuration (a stale one has another hash)."""
        marker = self.path(job_id) / MARKER
        try:
            return json.loads(marker.read_text()).get("hash") == config_hash
        except (OSError, ValueError):
            return False

    def in_progress(self, job_id: str) -> bool:
        """A temporary folder of this job exists (it is being built, or was left by a killed run)."""
        final = self.path(job_id)
        return final.parent.is_dir() and any(final.parent.glob(f".tmp-{final.name}-*"))

    def begin(self, job: Job) -> Path:
        """A fresh temporary folder in which the job builds its artifact."""
        final = self.path(job)
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))

    def commit(self, job: Job, tmp: Path, rows: list[dict[str, Any]], info: dict[str, Any] | None = None) -> None:
        """Write rows and the marker into `tmp`, then swap it into place atomically."""
        (tmp / ROWS).write_text(json.dumps(rows, indent=1, default=float))
        marker = {"job": job.id, "hash": job.hash, "finished": time.time(), **(info or {})}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1, default=str))
        final = self.path(job)
        if final.exists():
            trash = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)

    def rows(self, job: Job) -> list[dict[str, Any]]:
        return json.loads((self.path(job) / ROWS).read_text())

    def marker(self, job: Job) -> dict[str, Any]:
        return json.loads((self.path(job) / MARKER).read_text())

    def clean_temporaries(self) -> int:
        """Remove leftovers of interrupted jobs (never read as complete; removed for disk space)."""
        removed = 0
        art = self.root / "artifacts"
        if art.is_dir():
            for leftover in list(art.rglob(".tmp-*")) + list(art.rglob(".old-*")):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                    removed += 1
        partial_files = list(self.root.glob(".*.tmp")) + list((self.root / "logs").glob(".*.tmp"))
        for partial in partial_files:  # atomic_write's temporary files (results.csv, manifest, progress)
            partial.unlink(missing_ok=True)
            removed += 1
        return removed

    # -- files ------------------------------------------------------------------------------ #
    def write_json(self, name: str, payload: Any) -> None:
        atomic_write_text(self.root / name, json.dumps(payload, indent=2, default=str))

    def read_json(self, name: str) -> Any:
        return json.loads((self.root / name).read_text())

    @property
    def logs(self) -> Path:
        path = self.root / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path
