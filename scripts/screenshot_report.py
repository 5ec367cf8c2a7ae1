"""Render a run's report/index.html in headless Chromium and save screenshots (not part of `make test`).

    python scripts/screenshot_report.py RUN_DIR [--out DIR] [--height 6000]

Uses the Debian `chromium` package with networking features off and a fresh profile, so the
screenshot shows exactly what the self-contained page renders offline. Prints JSON with the paths.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def screenshot(page: Path, out: Path, width: int, height: int) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="acbench-chromium-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={out}", page.resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: RUN_DIR/report)")
    parser.add_argument("--width", type=int, default=1300)
    parser.add_argument("--height", type=int, default=5000)
    args = parser.parse_args()
    page = args.run_dir / "report" / "index.html"
    if not page.is_file():
        sys.exit(f"{page} not found: run `acbench report {args.run_dir}` first")
    out = args.out or page.parent
    out.mkdir(parents=True, exist_ok=True)
    full = screenshot(page, out / "screenshot.png", args.width, args.height)
    top = screenshot(page, out / "screenshot_top.png", args.width, 1000)
    print(json.dumps({"page": str(page), "bytes": page.stat().st_size, "screenshots": [str(full), str(top)]}))


if __name__ == "__main__":
    main()
