"""Fault tolerance: kill -9 anywhere, failing jobs, --fail-fast, retrying only what failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from engine_helpers import leftovers, results, run_cli, write_protocol

from acbench.engine import run_study
from acbench.engine.status import run_status
from acbench.protocol import load_protocol

# Each point patches one function so that the process SIGKILLs itself there: a real kill -9 at a
# chosen place instead of a random one. Points are run in this order on the same run folder.
KILL_POINTS = {
    # half of a PNG written straight to its file, then killed (inside the job's temporary folder)
    "mid-image": """
        import acbench.synthesis as target
        real = target.save_png
        def patched(path, array):
            calls.append(path)
            if len(calls) == 3:
                data = open(path, "wb"); data.write(b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0" * 40); data.flush()
                die()
            real(path, array)
        target.save_png = patched
    """,
    # rows.json and DONE.json written into the temporary folder, killed before the rename
    "before-rename": """
        import os
        import acbench.engine.store as target
        real_commit, real_replace = target.RunStore.commit, os.replace
        def replace(src, dst):
            if "artifacts" in str(dst):
                die()
            real_replace(src, dst)
        def commit(self, *args, **kwargs):
            target.os.replace = replace
            real_commit(self, *args, **kwargs)
        target.RunStore.commit = commit
    """,
    # the first job committed; killed as the second one starts
    "second-job": """
        import acbench.engine.stages as target
        real = target.execute_job
        def patched(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                die()
            return real(*args, **kwargs)
        target.execute_job = patched
    """,
    # all jobs done; killed half-way through writing results.csv
    "mid-results": """
        import pandas as pd
        real = pd.DataFrame.to_csv
        def patched(self, path=None, **kwargs):
            text = real(self, None, **kwargs)
            with open(path, "w") as fh:
                fh.write(text[: len(text) // 2]); fh.flush()
            die()
        pd.DataFrame.to_csv = patched
    """,
    # results written; killed while rendering the report
    "mid-report": """
        import acbench.report as target
        def patched(*args, **kwargs):
            die()
        target.render_report = patched
    """,
}

# One process imports everything once, then forks a child per kill point (each child SIGKILLs itself
# at its point: a real kill -9), and finally re-runs the study itself through the CLI.
DRIVER = """
import json, os, signal, sys, textwrap
from pathlib import Path
from acbench import cli
import acbench_methods.classic, acbench.engine.runner, acbench.report  # imported once, before forking

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def run_cli():
    sys.argv = ["acbench", "run", {protocol!r}, "--out", {out!r}, "--quiet"]
    cli.main()

killed = {{}}
for point, patch in json.loads({points!r}).items():
    pid = os.fork()
    if pid == 0:
        calls = []
        exec(textwrap.dedent(patch))
        run_cli()
        os._exit(0)  # reaching here means the kill point was never reached
    _, status = os.waitpid(pid, 0)
    killed[point] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
    # what the kill left: every marker must sit in a complete artifact; no half results.csv in place
    # (a marker inside a .tmp- folder is never read: only the final artifact path counts)
    markers = [m for m in Path({out!r}, "artifacts").rglob("DONE.json")
               if not any(part.startswith(".tmp-") for part in m.parts)]
    complete = all((m.parent / "rows.json").is_file() and (m.parent / "index.csv").is_file()
                   for m in markers if "generate" in m.parts)
    print(json.dumps({{"point": point, "signal": killed[point], "done": len(markers), "complete": complete,
                      "results_csv": Path({out!r}, "results.csv").exists()}}), flush=True)
sys.argv = ["acbench", "run", {protocol!r}, "--out", {out!r}]
cli.main()
"""


def test_kill_9_at_any_point_then_rerun_equals_uninterrupted(tmp_path):
    protocol = write_protocol(tmp_path)
    reference = run_study(load_protocol(protocol), out=tmp_path / "reference", report=False)
    assert reference.ok
    out = tmp_path / "killed"
    code = DRIVER.format(protocol=str(protocol), out=str(out), points=json.dumps(KILL_POINTS))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    reports = {r["point"]: r for r in map(json.loads, (ln for ln in proc.stdout.splitlines() if ln[:1] == "{"))}
    assert {p: r["signal"] for p, r in reports.items()} == dict.fromkeys(KILL_POINTS, signal.SIGKILL), proc.stderr
    assert all(r["complete"] for r in reports.values())
    # jobs done after each kill: none, none (killed before the rename), 1, 2, 2
    assert [r["done"] for r in reports.values()] == [0, 0, 1, 2, 2]
    assert not reports["mid-results"]["results_csv"], "a half-written results.csv reached its place"
    assert proc.returncode == 0, proc.stderr  # the final re-run completed the study
    assert "INFO" not in proc.stderr  # the console shows warnings only ...
    assert "INFO" in (out / "logs" / "run.log").read_text()  # ... the run log everything
    pd.testing.assert_frame_equal(results(tmp_path / "reference"), results(out))
    assert leftovers(out) == []
    assert run_status(out).counts() == {"done": 2, "running": 0, "failed": 0, "pending": 0}


@pytest.fixture
def scar_fails(monkeypatch):
    """CutPaste raises (a bug, not a user error) whenever it runs in 'scar' mode."""
    from acbench_methods.classic.cutpaste import CutPaste

    real = CutPaste.generate

    def generate(self, data, request):
        if self.options.mode == "scar":
            raise RuntimeError("scar mode exploded")
        return real(self, data, request)

    monkeypatch.setattr(CutPaste, "generate", generate)
    return real


TWO_METHODS = [{"name": "cutpaste", "variant": "scar", "options": {"mode": "scar"}},
               {"name": "cutpaste", "variant": "patch", "options": {"mode": "patch"}}]


def test_failing_job_is_recorded_others_continue_and_rerun_retries_only_it(monkeypatch, capsys, tmp_path,
                                                                           scar_fails):
    from acbench_methods.classic.cutpaste import CutPaste

    protocol, out = write_protocol(tmp_path, methods=TWO_METHODS), tmp_path / "run"
    assert run_cli(monkeypatch, "run", protocol, "--out", out, "--quiet") == 1
    err = capsys.readouterr().err
    assert "failed generate/cutpaste@scar/brick/0: scar mode exploded" in err
    assert "failed quality/cutpaste@scar/brick/0: not run: dependency generate/cutpaste@scar/brick/0" in err
    assert "ran 2, cached 0, failed 2" in err
    trace = (out / "logs" / "generate__cutpaste@scar__brick__0.err").read_text()
    assert "Traceback" in trace and "RuntimeError: scar mode exploded" in trace
    assert "scar mode exploded" in (out / "logs" / "generate__cutpaste@scar__brick__0.log").read_text()
    assert (out / "artifacts" / "quality" / "cutpaste@patch" / "brick" / "0" / "DONE.json").is_file()
    status = run_status(out)
    assert status.jobs["failed"] == ["generate/cutpaste@scar/brick/0"]
    assert status.errors["generate/cutpaste@scar/brick/0"] == "RuntimeError: scar mode exploded"

    monkeypatch.setattr(CutPaste, "generate", scar_fails)  # the bug is fixed
    result = run_study(load_protocol(protocol), out=out, report=False)
    assert sorted(result.ran) == ["generate/cutpaste@scar/brick/0", "quality/cutpaste@scar/brick/0"]
    assert sorted(result.skipped) == ["generate/cutpaste@patch/brick/0", "quality/cutpaste@patch/brick/0"]
    assert not (out / "logs" / "generate__cutpaste@scar__brick__0.err").exists()
    assert run_status(out).counts()["done"] == 4


def test_fail_fast_stops_at_the_first_failure(monkeypatch, capsys, tmp_path, scar_fails):
    protocol, out = write_protocol(tmp_path, methods=TWO_METHODS), tmp_path / "run"
    assert run_cli(monkeypatch, "run", protocol, "--out", out, "--quiet", "--fail-fast") == 1
    err = capsys.readouterr().err
    assert "ran 0, cached 0, failed 1, not run 3 (--fail-fast)" in err
    assert not (out / "artifacts" / "generate" / "cutpaste@patch").exists()
    assert run_status(out).counts() == {"done": 0, "running": 0, "failed": 1, "pending": 3}


class InProcessBackend:
    """A backend for `DependencyScheduler` that runs jobs in this process and finishes them in
    submission order, or in reverse order (as a cluster may): every dependency must still hold."""

    def __init__(self, reverse: bool) -> None:
        self.reverse = reverse
        self.finished_order: list[str] = []

    def make(self):
        from acbench.engine.executors import DependencyScheduler
        from acbench.engine.worker import run_job

        backend = self

        class Scheduler(DependencyScheduler):
            def open(self, protocol, store):
                self.args = (protocol.model_dump_json(), str(store.root))
                self.pending = []

            def submit(self, job):
                self.pending.append(job)
                return job.id

            def wait(self, handles):
                return [handles[-1] if backend.reverse else handles[0]]

            def outcome(self, handle, job):
                for dep in job.deps:
                    assert dep in backend.finished_order, f"{job.id} ran before {dep}"
                backend.finished_order.append(job.id)
                return run_job(*self.args, job, "cpu")

        return Scheduler()


@pytest.mark.parametrize("fail_fast", [False, True])
def test_dependency_scheduler_blocks_dependents_of_failed_jobs(monkeypatch, tmp_path, scar_fails, fail_fast):
    backend = InProcessBackend(reverse=not fail_fast)
    monkeypatch.setattr("acbench.engine.runner.make_executor", lambda protocol, device: backend.make())
    result = run_study(load_protocol(write_protocol(tmp_path, methods=TWO_METHODS)), out=tmp_path / "run",
                       fail_fast=fail_fast, report=False)
    assert list(result.failed) == ["generate/cutpaste@scar/brick/0", "quality/cutpaste@scar/brick/0"]
    assert result.blocked == {"quality/cutpaste@scar/brick/0": "generate/cutpaste@scar/brick/0"}
    if fail_fast:  # both generate jobs were submitted; the scar one fails first; nothing is submitted after
        assert result.ran == ["generate/cutpaste@patch/brick/0"]
        assert result.not_run == ["quality/cutpaste@patch/brick/0"]
    else:
        assert sorted(result.ran) == ["generate/cutpaste@patch/brick/0", "quality/cutpaste@patch/brick/0"]
    assert result.exit_code == 1
