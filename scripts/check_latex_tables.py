"""Compile every LaTeX table of a rendered report with pdflatex (not part of `make test`).

    python scripts/check_latex_tables.py RUN_DIR

Each report/tables/*.tex is \\input{} into a minimal document with booktabs and amssymb, exactly
as a paper would use it; prints JSON with the tables that compiled and the ones that failed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCUMENT = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage{booktabs,amssymb,graphicx}
\begin{document}
\resizebox{\textwidth}{!}{\input{table.tex}}
\end{document}
"""


def compile_table(tex: Path) -> bool:
    with tempfile.TemporaryDirectory(prefix="acbench-latex-") as tmp:
        shutil.copy(tex, Path(tmp) / "table.tex")
        (Path(tmp) / "doc.tex").write_text(DOCUMENT)
        result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp,
                                capture_output=True, text=True, timeout=120, check=False)
        return result.returncode == 0


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if shutil.which("pdflatex") is None:
        sys.exit("pdflatex not found: apt-get install texlive-latex-base texlive-latex-recommended")
    tables = sorted((Path(sys.argv[1]) / "report" / "tables").glob("*.tex"))
    results = {t.name: compile_table(t) for t in tables}
    print(json.dumps({"compiled": [n for n, ok in results.items() if ok],
                      "failed": [n for n, ok in results.items() if not ok]}, indent=1))
    if not all(results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
