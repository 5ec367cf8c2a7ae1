"""Wall time of the command line's quick paths: `acbench --help` and `acbench list methods` (targets 1.5 s / 3 s).

Prints JSON: the median of `--repeats` runs of each command in a fresh process, and the machine's load.

    python benchmarks/cli_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("acbench") or os.path.join(os.path.dirname(sys.executable), "acbench")
    out = {"load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count()}
    for label, argv in {"help": ["--help"], "list_methods": ["list", "methods"]}.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([exe, *argv], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        out[f"{label}_seconds_median"] = round(statistics.median(times), 3)
        out[f"{label}_seconds_min"] = round(min(times), 3)
    out["targets"] = {"help_seconds": 1.5, "list_methods_seconds": 3.0}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
