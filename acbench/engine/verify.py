"""`acbench verify RUN_DIR`: re-run jobs of a finished study and check that they reproduce bit for bit.

Each chosen job is re-run in a scratch folder inside the run folder, on the very inputs it had (its
dependencies' artifacts are hard-linked, not recomputed), under the protocol of the manifest. A job
reproduces when its result rows are identical and every file of its artifact has the same bytes
(the marker's timestamps aside). Nothing in the run folder itself is changed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acbench.engine.plan import Job, plan
from acbench.engine.store import MARKER, ROWS, RunStore
from acbench.errors import UserError
from acbench.protocol import Protocol


@dataclass
class Verdict:
    job_id: str
    reproduced: bool
    differences: list[str] = field(default_factory=list)


def _link_tree(source: Path, target: Path) -> None:
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:  # another filesystem, or links not allowed: a copy reads the same
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file() and p.name != MARKER}


def _compare(original: Path, again: Path) -> list[str]:
    diffs = []
    rows_a, rows_b = (json.loads((f / ROWS).read_text()) for f in (original, again))
    if rows_a != rows_b:
        changed = [f"{a.get('metric')}{'/' + a['anomaly_type'] if a.get('anomaly_type') else ''}: "
                   f"{a.get('value')} vs {b.get('value')}" for a, b in zip(rows_a, rows_b, strict=False) if a != b]
        if len(rows_a) != len(rows_b):
            changed.append(f"{len(rows_a)} vs {len(rows_b)} rows")
        diffs.append("rows differ: " + "; ".join(changed[:5]) + (" …" if len(changed) > 5 else ""))
    files_a, files_b = _files(original), _files(again)
    for name in sorted(set(files_a) ^ set(files_b)):
        diffs.append(f"file only in {'the run' if name in files_a else 'the re-run'}: {name}")
    differing = [n for n in sorted(set(files_a) & set(files_b)) if n != ROWS
                 and files_a[n].read_bytes() != files_b[n].read_bytes()]
    if differing:
        diffs.append(f"{len(differing)} file(s) with other bytes: " + ", ".join(differing[:5])
                     + (" …" if len(differing) > 5 else ""))
    return diffs


def choose_jobs(jobs: list[Job], store: RunStore, sample: int, all_jobs: bool, seed: int = 0) -> list[Job]:
    done = [j for j in jobs if store.is_done(j)]
    if all_jobs or sample >= len(done):
        return done
    picked = np.random.default_rng(seed).choice(len(done), size=sample, replace=False)
    return [done[i] for i in sorted(picked)]


def verify_run(run_dir: str | Path, sample: int = 3, all_jobs: bool = False, device: str | None = None,
               seed: int = 0) -> list[Verdict]:
    from acbench.engine.worker import run_job

    store = RunStore(run_dir)
    try:
        manifest = store.read_json("manifest.json")
    except (OSError, ValueError):
        raise UserError(f"{run_dir}: not a finished run folder (manifest.json missing or unreadable)") from None
    protocol = Protocol.model_validate(manifest["protocol"])
    jobs = plan(protocol, manifest["categories"])
    by_id = {j.id: j for j in jobs}
    recorded = {p["id"]: p["hash"] for p in manifest.get("plan", [])}
    stale = [j.id for j in jobs if recorded.get(j.id) not in (None, j.hash)]
    if stale:
        raise UserError(f"{run_dir}: this acbench plans {len(stale)} job(s) with other configuration hashes than "
                        f"the run (e.g. {stale[0]}): the code or its defaults changed since; verify with the "
                        f"version of the manifest (git commit {manifest.get('git_commit', '?')})")
    chosen = choose_jobs(jobs, store, sample, all_jobs, seed)
    if not chosen:
        raise UserError(f"{run_dir}: no finished job to verify")
    device = device or manifest.get("device") or protocol.executor.device
    verdicts = []
    for job in chosen:
        scratch = Path(tempfile.mkdtemp(dir=store.root, prefix=".verify-"))
        try:
            again = RunStore(scratch)
            for dep in _closure(job, by_id):
                _link_tree(store.path(dep), again.path(dep))
            outcome = run_job(protocol.model_dump_json(), str(scratch), job, device)
            if outcome.status != "done":
                verdicts.append(Verdict(job.id, False, [f"re-run failed: {outcome.error}"]))
                continue
            diffs = _compare(store.path(job), again.path(job))
            verdicts.append(Verdict(job.id, not diffs, diffs))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return verdicts


def _closure(job: Job, by_id: dict[str, Job]) -> list[Job]:
    """Every job `job` depends on, directly or not."""
    seen: dict[str, Job] = {}
    stack = list(job.deps)
    while stack:
        dep = by_id[stack.pop()]
        if dep.id not in seen:
            seen[dep.id] = dep
            stack.extend(dep.deps)
    return list(seen.values())
