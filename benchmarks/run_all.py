"""Run every benchmark in benchmarks/ and the demo study; write one JSON with all results.

Each `benchmarks/*.py` script (except this one and `_*.py`) is run as its own process with its
defaults (or `--script-args`), and is expected to print one JSON object. The demo study is
`acbench run protocols/demo.yaml` without its detectors (the harness's own cost: synthesis, quality
scores, report), timed by wall clock, with the peak resident memory of that process, against the
targets of the project (<= 5 minutes, <= 4 GB on 2 CPU cores).

    python benchmarks/run_all.py --out benchmarks/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEMO_TARGETS = {"wall_seconds": 300.0, "peak_rss_gb": 4.0}


def run_measured(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict:
    """Run a command; its wall time, exit code, output and peak RSS (of that process, via wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=env)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return {"returncode": proc.returncode, "wall_seconds": round(wall, 2),
                "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3),  # ru_maxrss is in KiB on Linux
                "timed_out": wall > timeout, "stdout": out.read(), "stderr": err.read()}


def parse_json_output(text: str) -> dict | None:
    """The last JSON object a benchmark printed (indented or not, after any other output)."""
    decoder = json.JSONDecoder()
    starts = [i for i, line in enumerate(text.splitlines(keepends=True)) if line.startswith("{")]
    offsets = [sum(len(ln) for ln in text.splitlines(keepends=True)[:i]) for i in starts]
    for offset in reversed(offsets):
        try:
            value, _ = decoder.raw_decode(text[offset:])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def benchmark_scripts(skip: list[str]) -> list[Path]:
    return sorted(p for p in HERE.glob("*.py")
                  if p.name != Path(__file__).name and not p.name.startswith("_") and p.stem not in skip)


def run_script(script: Path, args: list[str], timeout: float) -> dict:
    measured = run_measured([sys.executable, str(script), *args], timeout)
    result = parse_json_output(measured["stdout"])
    entry = {k: measured[k] for k in ("returncode", "wall_seconds", "peak_rss_gb", "timed_out")}
    if result is None or measured["returncode"] != 0:
        entry["error"] = measured["stderr"].strip().splitlines()[-5:]
    entry["result"] = result
    return entry


def demo_study(timeout: float) -> dict:
    """The shipped demo protocol without detectors, in a fresh run folder."""
    protocol = yaml.safe_load((REPO / "protocols" / "demo.yaml").read_text())
    protocol["detectors"] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.yaml"
        path.write_text(yaml.safe_dump(protocol))
        cmd = [sys.executable, "-c", "from acbench.cli import main; main()", "run", str(path),
               "--out", str(Path(tmp) / "run"), "--quiet", "--device", "cpu"]
        measured = run_measured(cmd, timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
        jobs = len(json.loads((Path(tmp) / "run" / "manifest.json").read_text())["plan"]) \
            if (Path(tmp) / "run" / "manifest.json").is_file() else None
    entry = {k: measured[k] for k in ("returncode", "wall_seconds", "peak_rss_gb", "timed_out")}
    entry.update(jobs=jobs, methods=[m.get("variant") or m["name"] for m in protocol["methods"]],
                 targets=DEMO_TARGETS,
                 meets_targets=measured["returncode"] == 0 and all(entry[k] <= v for k, v in DEMO_TARGETS.items()))
    if measured["returncode"] != 0:
        entry["error"] = measured["stderr"].strip().splitlines()[-5:]
    return entry


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--skip", action="append", default=[], help="benchmark name to skip (repeatable)")
    parser.add_argument("--script-args", default="", help="arguments given to every benchmark script")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo study")
    args = parser.parse_args()

    # machine() imports torch: only after every measured run, since a child's peak RSS (wait4) counts
    # the memory of the parent it was forked from
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "benchmarks": {}}
    for script in benchmark_scripts(args.skip):
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        report["benchmarks"][script.stem] = run_script(script, shlex.split(args.script_args), args.timeout)
    if not args.no_demo:
        print("running the demo study ...", file=sys.stderr, flush=True)
        report["demo_study"] = demo_study(args.timeout)
    report["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
