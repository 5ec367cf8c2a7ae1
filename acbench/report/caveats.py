"""What the numbers of a run rest on that a reader would not guess: fallbacks the jobs took and counted.

Each comes from a column of results.csv (written by the engine, the metrics and the detectors):

- `n_fallback_masks`: target masks that were small fallback disks (the mask source found no placement);
- `n_whole_image_foreground`: foreground estimates not trusted and replaced by the whole image;
- `references: shared`: one ungrouped reference set stood in for every anomaly type;
- `n_types_skipped`: types a category mean leaves out (no references, too few images, NaN);
- `omitted`: pixel metrics undefined because the ground-truth masks are all empty (or all full);
- `types_not_generated`: types with too few real anomalies for the split (no synthesis example), so
  no method generated them while detectors are still evaluated on them.
"""

from __future__ import annotations

import pandas as pd

MAX_LISTED = 6


def _listing(items: list[str]) -> str:
    return ", ".join(items[:MAX_LISTED]) + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce").fillna(0) if column in frame.columns else \
        pd.Series(0, index=frame.index)


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].map(lambda v: "" if pd.isna(v) else str(v)) if column in frame.columns else \
        pd.Series("", index=frame.index)


def _per_generation(frame: pd.DataFrame, column: str, what: str) -> tuple[str, str] | None:
    """A count carried by every row built on one generate job: one value per method x category x seed."""
    counts = _numeric(frame, column)
    hit = frame.assign(count_=counts)[counts > 0]
    if hit.empty:
        return None
    jobs = hit.drop_duplicates(["label", "category", "seed"])
    items = [f"{r.label} on {r.category} (seed {r.seed}): {int(r.count_)}" for r in jobs.itertuples()]
    return what, _listing(items)


def caveats(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(what, where) pairs for the report's caveats list; empty when every number is what it says."""
    if frame.empty:
        return []
    out = []
    for column, what in (("n_fallback_masks", "fallback masks (small disks: no valid placement found)"),
                         ("n_whole_image_foreground", "foreground not found, whole image used")):
        found = _per_generation(frame, column, what)
        if found:
            out.append(found)
    shared = frame[_text(frame, "references") == "shared"].drop_duplicates(["metric", "label", "category"])
    if not shared.empty:
        out.append(("one reference set for every type", _listing(
            [f"{r.metric} of {r.label} on {r.category}" for r in shared.itertuples()])))
    skipped = frame[(frame["anomaly_type"] == "") & (_numeric(frame, "n_types_skipped") > 0)]
    if not skipped.empty:
        skipped = skipped.assign(covered_=_numeric(skipped, "n_types"), left_=_numeric(skipped, "n_types_skipped"))
        skipped = skipped.drop_duplicates(["metric", "label", "category"])
        out.append(("category mean over fewer types", _listing(
            [f"{r.metric} of {r.label} on {r.category}: {int(r.covered_)} types, {int(r.left_)} skipped"
             for r in skipped.itertuples()])))
    unsplit = frame[_text(frame, "types_not_generated") != ""].drop_duplicates(["category"])
    if not unsplit.empty:
        out.append(("types too small to split (evaluated, never generated)", _listing(
            [f"{r.category}: {r.types_not_generated.replace(';', ', ')}" for r in unsplit.itertuples()])))
    omitted = frame[_text(frame, "omitted") != ""].drop_duplicates(["detector", "category"])
    if not omitted.empty:
        out.append(("pixel metrics undefined (ground-truth masks all empty or all full)", _listing(
            [f"{r.detector} on {r.category}" for r in omitted.itertuples()])))
    return out
