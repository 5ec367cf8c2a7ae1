"""Rendering tables as Markdown, LaTeX (booktabs) and HTML from one intermediate grid.

Every table (metric tables, ablation, references, correlations) becomes a `Grid` of plain-text
cells with a rank (1 = best, bold; 2 = second, underlined), so the three formats agree.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import pandas as pd

from acbench.report.tables import BOOTSTRAP_RESAMPLES, MEAN_ROW, TEST_IMAGES, TEST_UNITS, MetricTable, cell_parts

RANDOM_NOTE = "† random weights — not comparable"
BOX_NOTE = "‡ synthetic masks are boxes — pixel metrics against box labels are not comparable"


@dataclass
class Cell:
    text: str
    rank: int = 0  # 1: best (bold), 2: second (underlined)


@dataclass
class Grid:
    title: str
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    rule_before_last: bool = False  # a midrule above the mean row

    @classmethod
    def from_frame(cls, title: str, frame: pd.DataFrame, notes: list[str] | None = None) -> Grid:
        """A plain grid (no highlighting) from a frame of already formatted cells."""
        header = [str(frame.index.name or "")] + [str(c) for c in frame.columns]
        rows = [[Cell(str(idx))] + [Cell("" if pd.isna(v) else str(v)) for v in row]
                for idx, row in zip(frame.index, frame.itertuples(index=False), strict=True)]
        return cls(title, header, rows, notes or [])


RANKING_NOTE = ("best in bold, second underlined only where a paired bootstrap (95%) over seeds, or categories x "
                "seeds in the mean row, separates them from the next; unmarked = tied (fewer than 3 pairs: always)")


def decided_by(table: MetricTable, row: str) -> str:
    """The tests that decided a row's marks, in words ('' where `ranks` compared no pair in it)."""
    if row not in table.decided:
        return ""
    tests = table.decided[row]
    units = "categories × seeds" if row == MEAN_ROW else "seeds"
    words = (["test images"] if TEST_IMAGES in tests else []) + ([units] if TEST_UNITS in tests else [])
    return " + ".join(words) or "none (tied)"


def marks_note(where: dict[str, str]) -> str:
    """The ranking note naming the test behind the marks of each part (rows or columns -> `decided_by`)."""
    groups: dict[str, list[str]] = {}
    for name, words in where.items():
        if words:
            groups.setdefault(words, []).append(name)
    parts = "; ".join(f"{', '.join(names)} — {words}" for words, names in groups.items())
    return (f"best in bold, second underlined only where a paired bootstrap (95%, {BOOTSTRAP_RESAMPLES} resamples) "
            "separates them from the next — over the test images (the same stratified draws for both methods) "
            "and over seeds (categories × seeds in the mean row) where there are ≥ 3; where both apply, both must; "
            "unmarked = tied. Tests that decided: "
            + (parts or "none (tied)"))


def ranking_note(table: MetricTable) -> str:
    """RANKING_NOTE for tables ranked over seeds only; with an image test, which test decided which rows
    (call after `ranks` has run on the rows)."""
    if table.image_test is None:
        return RANKING_NOTE
    categories = [r for r in table.mean.index if r != MEAN_ROW]
    words = {decided_by(table, r) for r in categories} - {""}
    where = {"category rows": words.pop()} if len(words) == 1 else {r: decided_by(table, r) for r in categories}
    where["mean row"] = decided_by(table, MEAN_ROW)
    return marks_note(where)


def metric_grid(table: MetricTable) -> Grid:
    labels = list(table.mean.columns)
    header = ["category"] + [lb + (" †" if lb in table.random else "") + (" ‡" if lb in table.boxes else "")
                             for lb in labels]
    rows = []
    for row in table.mean.index:
        ranks = table.ranks(row)
        cells = [Cell(str(row))]
        for label in labels:
            parts = cell_parts(table, row, label)
            if parts is None:
                cells.append(Cell("–"))
                continue
            main, spread, interval = parts
            text = main + (f" ± {spread}" if spread else "") + (f" [{interval}]" if interval else "")
            cells.append(Cell(text, ranks.get(label, 0)))
        rows.append(cells)
    notes = []
    if (table.count.to_numpy(dtype=float) > 1).any():
        notes.append("mean ± std over seeds")
    if table.ci_low is not None:
        notes.append("[95% bootstrap interval over test images]")
    if table.direction is not None:
        notes.append(ranking_note(table))
    if table.random:
        notes.append(RANDOM_NOTE)
    if table.boxes:
        notes.append(BOX_NOTE)
    return Grid(table.title, header, rows, notes, rule_before_last=MEAN_ROW in table.mean.index)


# -- Markdown ----------------------------------------------------------------------------------- #
def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    if cell.rank == 1:
        return f"**{text}**"
    if cell.rank == 2:
        return f"<u>{text}</u>"
    return text


def to_markdown(grid: Grid, level: int = 2) -> str:
    lines = [f"{'#' * level} {grid.title}", "", "| " + " | ".join(grid.header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(grid.header) - 1)) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in grid.rows]
    if grid.notes:
        lines += ["", "_" + "; ".join(grid.notes) + "_"]
    return "\n".join(lines) + "\n"


# -- LaTeX -------------------------------------------------------------------------------------- #
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "✓": r"\checkmark",
                  "✗": r"$\times$", "†": r"\textsuperscript{\dag}", "—": "---", "–": "--", "×": r"$\times$",
                  "‡": r"\textsuperscript{\ddag}",
                  "ρ": r"$\rho$", "τ": r"$\tau$", "≥": r"$\geq$", "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    """Plain text -> LaTeX source (special characters escaped, symbols to math-mode commands)."""
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    for symbol, command in _LATEX_SYMBOLS.items():
        out = out.replace(symbol, command)
    return out


def _tex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text)
    if cell.rank == 1:
        return rf"\textbf{{{text}}}"
    if cell.rank == 2:
        return rf"\underline{{{text}}}"
    return text


def to_latex(grid: Grid) -> str:
    """A booktabs tabular ready for \\input{} (needs booktabs; amssymb for \\checkmark)."""
    spec = "l" + "c" * (len(grid.header) - 1)
    lines = [f"% {latex_escape(grid.title)}", r"% requires \usepackage{booktabs} (and amssymb for \checkmark)",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in grid.header) + r" \\", r"\midrule"]
    for i, row in enumerate(grid.rows):
        if grid.rule_before_last and i == len(grid.rows) - 1 and i > 0:
            lines.append(r"\midrule")
        lines.append(" & ".join(_tex_cell(c) for c in row) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    if grid.notes:
        lines.append("% " + latex_escape("; ".join(grid.notes)))
    return "\n".join(lines) + "\n"


# -- HTML --------------------------------------------------------------------------------------- #
_NUMERIC = re.compile(r"^[-+–]?[0-9.]")


def _html_cell(cell: Cell, tag: str = "td") -> str:
    if tag == "td" and cell.text == "random":
        tag = 'td class="t random"'
    elif tag == "td" and not _NUMERIC.match(cell.text) and cell.text not in ("✓", "✗"):
        tag = 'td class="t"'  # words read left-aligned, numbers right-aligned
    text = html.escape(cell.text)
    if cell.rank == 1:
        text = f"<b>{text}</b>"
    elif cell.rank == 2:
        text = f"<u>{text}</u>"
    return f"<{tag}>{text}</{tag.split()[0]}>"


def to_html(grid: Grid, level: int = 3) -> str:
    # a break opportunity after '/' lets long method labels (anomalycontrol/no_asea) wrap in the header
    head = "".join(f"<th>{html.escape(h).replace('/', '/<wbr>')}</th>" for h in grid.header)
    body = []
    for i, row in enumerate(grid.rows):
        cls = ' class="mean"' if grid.rule_before_last and i == len(grid.rows) - 1 else ""
        body.append(f"<tr{cls}>" + _html_cell(row[0], "th") + "".join(_html_cell(c) for c in row[1:]) + "</tr>")
    notes = f'<p class="note">{html.escape("; ".join(grid.notes))}</p>' if grid.notes else ""
    return (f"<h{level}>{html.escape(grid.title)}</h{level}>\n<div class=\"scroll\"><table><thead><tr>{head}"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>{notes}\n")
