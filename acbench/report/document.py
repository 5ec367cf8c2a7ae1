"""The report as a list of blocks, written out as Markdown (index.md) and as one self-contained
HTML page (index.html: inline CSS and base64 images, nothing fetched over a network)."""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path

from acbench.report.formats import Grid, to_html, to_markdown

_SCHEME = re.compile(r"\bhttps?://", re.IGNORECASE)


def no_links(text: str) -> str:
    """Drop URL schemes from free text so the page holds no fetchable address."""
    return _SCHEME.sub("", text)


@dataclass
class Block:
    kind: str  # heading | text | banner | grid | figure | facts | fold | unfold
    text: str = ""
    grid: Grid | None = None
    path: Path | None = None
    facts: list[tuple[str, str]] | None = None
    level: int = 2


def heading(text: str, level: int = 2) -> Block:
    return Block("heading", text, level=level)


def text(value: str) -> Block:
    return Block("text", value)


def banner(value: str) -> Block:
    return Block("banner", value)


def grid(value: Grid, level: int = 3) -> Block:
    return Block("grid", grid=value, level=level)


def figure(path: Path, caption: str, wide: bool = False) -> Block:
    return Block("figure", caption, path=path, level=1 if wide else 2)


def facts(items: list[tuple[str, str]]) -> Block:
    return Block("facts", facts=items)


def fold(summary: str) -> Block:
    """Start a collapsed section (HTML <details>; Markdown shows its content as usual)."""
    return Block("fold", summary)


def unfold() -> Block:
    return Block("unfold")


def to_md(blocks: list[Block], root: Path) -> str:
    out = []
    for b in blocks:
        if b.kind == "heading":
            out.append(f"{'#' * b.level} {b.text}\n")
        elif b.kind == "text":
            out.append(b.text + "\n")
        elif b.kind == "banner":
            out.append(f"> **⚠ {b.text}**\n")
        elif b.kind == "grid":
            out.append(to_markdown(b.grid, b.level))
        elif b.kind == "figure":
            out.append(f"![{b.text}]({b.path.relative_to(root).as_posix()})\n")
        elif b.kind == "facts":
            out.append("\n".join(f"- **{k}**: {v}" for k, v in b.facts) + "\n")
    return "\n".join(out)


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1a202c;background:#f7f8fa}
main{max-width:1200px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:26px;margin:8px 0 4px}
h2{font-size:20px;margin:36px 0 8px;border-bottom:2px solid #e2e8f0;padding-bottom:4px}
h3{font-size:15px;margin:22px 0 6px;color:#2d3748}
.banner{background:#c53030;color:#fff;font-weight:700;padding:14px 20px;border-radius:6px;margin:16px 0;font-size:15px}
.banner small{display:block;font-weight:400;margin-top:4px;font-size:12px;opacity:.95}
.scroll{overflow-x:auto}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:4px 0;box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{padding:4px 10px;border-bottom:1px solid #edf2f7;text-align:right;white-space:nowrap}
thead th{border-bottom:2px solid #4a5568;background:#f1f5f9;text-align:center;white-space:normal;max-width:11em;
vertical-align:bottom}
td.t{text-align:left}td.random{color:#c53030;font-weight:700}
thead th{overflow-wrap:anywhere}
tbody th{text-align:left;font-weight:600}
tr.mean{border-top:2px solid #4a5568;background:#f8fafc}
td b{color:#1a365d}
.note{font-size:12px;color:#4a5568;margin:2px 0 10px;font-style:italic}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;font-size:13px;background:#fff;padding:12px 16px;
border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
dt{font-weight:600;color:#4a5568}dd{margin:0;word-break:break-word}
.tbl{display:inline-block;vertical-align:top;margin:0 28px 8px 0;max-width:100%}
figure{margin:10px 14px 18px 0;background:#fff;padding:10px;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.06);
display:inline-block;vertical-align:top;box-sizing:border-box}
figure.half{max-width:calc(50% - 26px)}figure.wide{max-width:100%}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#4a5568;margin-top:4px}
details{margin:10px 0}summary{cursor:pointer;font-size:14px;color:#2b6cb0;margin:6px 0}
nav{font-size:13px;margin:8px 0 0}nav a{margin-right:14px;color:#2b6cb0;text-decoration:none}
p{font-size:14px;line-height:1.5}
"""


INLINE_PNG_LIMIT = 300_000  # larger images (photo grids) are inlined as JPEG to keep the page light
INLINE_MAX_WIDTH = 1400  # px; the files on disk keep their full resolution


def _img(path: Path) -> str:
    raw, kind = path.read_bytes(), "png"
    if len(raw) > INLINE_PNG_LIMIT:
        from PIL import Image

        image = Image.open(path).convert("RGB")
        if image.width > INLINE_MAX_WIDTH:
            image = image.resize((INLINE_MAX_WIDTH, round(image.height * INLINE_MAX_WIDTH / image.width)),
                                 Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=82)
        raw, kind = buffer.getvalue(), "jpeg"
    data = base64.b64encode(raw).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/{kind};base64,{data}">'


def _anchor(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def to_page(blocks: list[Block], title: str) -> str:
    nav = [b.text for b in blocks if b.kind == "heading" and b.level == 2]
    body = [f"<h1>{html.escape(title)}</h1>",
            "<nav>" + "".join(f'<a href="#{_anchor(n)}">{html.escape(n)}</a>' for n in nav) + "</nav>"]
    for b in blocks:
        if b.kind == "heading":
            body.append(f'<h{b.level} id="{_anchor(b.text)}">{html.escape(b.text)}</h{b.level}>')
        elif b.kind == "text":
            body.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind == "banner":
            head, _, rest = b.text.partition(": ")
            small = f"<small>{html.escape(rest)}</small>" if rest else ""
            body.append(f'<div class="banner">⚠ {html.escape(head)}{small}</div>')
        elif b.kind == "grid":
            body.append(f'<div class="tbl">{to_html(b.grid, b.level)}</div>')
        elif b.kind == "figure":
            size = "wide" if b.level == 1 else "half"
            body.append(f'<figure class="{size}">{_img(b.path)}<figcaption>{html.escape(b.text)}</figcaption></figure>')
        elif b.kind == "fold":
            body.append(f"<details><summary>{html.escape(b.text)}</summary>")
        elif b.kind == "unfold":
            body.append("</details>")
        elif b.kind == "facts":
            items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in b.facts)
            body.append(f"<dl>{items}</dl>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")
    return no_links(page)
