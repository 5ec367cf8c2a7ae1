"""The run summary of a report: versions, seeds, split, device, and which weights each network used."""

from __future__ import annotations

import logging
from pathlib import Path

from acbench.report.formats import Cell, Grid
from acbench.report.load import Run, weights_used

log = logging.getLogger(__name__)


def manifest_facts(run: Run) -> list[tuple[str, str]]:
    m = run.manifest
    protocol = m.get("protocol", {})
    versions = m.get("versions", {})
    split = m.get("split", {})
    facts = [
        ("protocol", (f"{protocol.get('name', '?')} ({m.get('protocol_file') or 'no file'}), hash "
                      f"{m.get('protocol_hash', '?')}")),
        ("description", " ".join(str(protocol.get("description", "")).split()) or "–"),
        ("dataset", (f"{protocol.get('dataset', {}).get('kind', '?')}; categories: "
                     f"{', '.join(m.get('categories', [])) or '–'}")),
        ("split", f"fraction {split.get('fraction')} ({split.get('order')}), "
                  + ("legacy overlap (AnomalyDiffusion code: one image per type on both sides)"
                     if split.get("legacy_overlap") else "synthesis and evaluation disjoint")),
        ("seeds", ", ".join(str(s) for s in m.get("seeds", [])) or "–"),
        ("methods", ", ".join(_labels(protocol.get("methods", []))) or "–"),
        ("detectors", ", ".join(f"{lb} ({d.get('preset', '')})" for lb, d in
                                zip(_labels(protocol.get("detectors", [])), protocol.get("detectors", []),
                                    strict=True)) or "–"),
        ("metrics", ", ".join(protocol.get("metrics", [])) or "–"),
        ("weights policy", str(m.get("weights_policy", protocol.get("weights", "?")))),
        ("weights used", _weights_summary(run)),
        ("device", " / ".join(str(m[k]) for k in ("device", "gpu", "platform") if m.get(k)) or "–"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "–"),
        ("git commit", str(m.get("git_commit", "–"))),
        ("time", (f"started {m.get('started', '?')}, finished {m.get('finished', '?')} "
                  f"({m.get('seconds', '?')} s)")),
    ]
    generator = _generator_tags(run)
    if generator:
        facts.append(("generators", generator))
    if m.get("compared_runs"):
        facts.insert(0, ("runs compared", "; ".join(f"{r['run']}: {r['path']} (protocol hash {r.get('protocol_hash')})"
                                                   for r in m["compared_runs"])))
    if m.get("failed_jobs"):
        facts.append(("FAILED JOBS", ", ".join(m["failed_jobs"]) + " (tracebacks in logs/)"))
    return facts


def _labels(items: list[dict]) -> list[str]:
    return [f"{i['name']}/{i['variant']}" if i.get("variant") else i["name"] for i in items]


def _weights_summary(run: Run) -> str:
    table = weights_used(run.frame)
    values = set()
    for col in ("weights", "generator_weights"):
        if col in table.columns:
            values |= {v.strip() for cell in table[col] for v in str(cell).split(",") if v.strip()}
    if run.random_parts:
        values.add("random")
    if not values:
        return "no network weights recorded in the results (weight-free metrics only)"
    return ", ".join(sorted(values)) + (" — RANDOM WEIGHTS: not comparable" if "random" in values else "")


def weights_grid(run: Run) -> Grid | None:
    """Method rows x (quality metrics, each detector, the generator) columns: the weights recorded."""
    table = weights_used(run.frame)
    if table.empty:
        return None
    columns: dict[str, dict[str, str]] = {}
    for _, r in table.iterrows():
        if "weights" in table.columns and r["weights"]:
            columns.setdefault(r["detector"] or "quality metrics", {})[r["method"]] = r["weights"]
        if "generator_weights" in table.columns and r["generator_weights"]:
            columns.setdefault("generator", {})[r["method"]] = r["generator_weights"]
    methods = list(dict.fromkeys(table["method"]))
    header = ["method", *columns]
    rows = [[Cell(m)] + [Cell(columns[c].get(m, "–")) for c in columns] for m in methods]
    return Grid("Weights used", header, rows, ["'random': the network was randomly initialised"])


def dataset_root_of(run: Run) -> Path | None:
    """The dataset folder of the run, for the normal images of sample grids (None when unavailable)."""
    config = run.manifest.get("protocol", {}).get("dataset")
    if not config:
        return None
    from pydantic import ValidationError

    from acbench.data import dataset_root
    from acbench.errors import UserError
    from acbench.protocol import DatasetConfig

    try:
        root = dataset_root(DatasetConfig.model_validate(config))
    # The dataset may live on another machine: grids then show grey tiles.
    except (UserError, OSError, ValueError, ValidationError) as exc:
        log.info("normal images unavailable for sample grids: %s", exc)
        return None
    return root if root.is_dir() else None


def _generator_tags(run: Run) -> str:
    """What each method's generator declared about itself (e.g. preset, captions), from `generator_*` columns."""
    frame = run.frame
    cols = [c for c in frame.columns if str(c).startswith("generator_") and c != "generator_weights"] \
        if not frame.empty else []
    parts = []
    for label, part in frame.groupby("label", sort=False) if cols else []:
        tags = []
        for col in cols:
            values = sorted({str(v) for v in part[col].dropna() if str(v) not in ("", "nan")})
            if values:
                tags.append(f"{col.removeprefix('generator_')} {', '.join(values)}")
        if tags:
            parts.append(f"{label}: {'; '.join(tags)}")
    return " | ".join(parts)
