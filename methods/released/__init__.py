"""`released`: benchmark the published image+mask pairs of a method, without training anything.

Protocol: `{name: released, options: {path: DIR, layout: anomalydiffusion}}`. The layouts `seas` and
`dfmgan` read the outputs of SeaS and DFMGAN (methods not re-trained here); their rows in every table
carry the method's name (label `released/seas`, `released/dfmgan`) unless the protocol sets a `variant`
itself. Every pair of a requested
(category, type) is validated (both files present and readable, same size, mask non-empty); bad pairs
are named in one UserError (`on_bad: error`, default) or skipped with a warning (`on_bad: skip`). The
first `count` valid pairs in numeric order are used; when a folder holds fewer, all of them are, and
the shortfall is logged and recorded in the provenance. `acbench import` converts a folder once into
SyntheticSets (layout `synthetic-set`), so later runs skip JPEG decoding and validation. The supported
layouts are documented in `acbench_methods.released.layouts`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from acbench.data.category import CategoryData
from acbench.errors import UserError, require_folder
from acbench.synthesis import GenerationRequest, Sample, Synthesizer, write_synthetic_set
from acbench_methods.released.layouts import LoadedPair, list_categories, list_pairs, list_types, load_pair

log = logging.getLogger(__name__)

#: Layouts that hold one other method's outputs: the method row is named after it.
NAMED_LAYOUTS = ("seas", "dfmgan")
MAX_NAMED = 5  # bad pairs named in the error line; the count says how many more


class ReleasedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path = Field(description="folder of released pairs")
    layout: Literal["anomalydiffusion", "seas", "dfmgan", "synthetic-set"] = "anomalydiffusion"
    on_bad: Literal["error", "skip"] = Field("error", description="a bad pair stops the run, or is skipped")


def valid_pairs(path: Path, layout: str, category: str, anomaly_type: str, size: int | None = None,
                on_bad: str = "error") -> list[LoadedPair]:
    """Every pair of (category, type), validated and decoded; bad ones raise or are skipped."""
    good, bad = [], []
    for ref in list_pairs(path, layout, category, anomaly_type):
        pair, why = load_pair(ref, size)
        if pair is None:
            bad.append(f"{ref.name} ({why})")
        else:
            good.append(pair)
    if bad:
        named = ", ".join(bad[:MAX_NAMED]) + (f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else "")
        where = f"{path} [{category}/{anomaly_type}]"
        if on_bad == "error":
            raise UserError(f"released: {len(bad)} bad pair(s) in {where}: {named}; fix or remove them, "
                            "or set on_bad: skip")
        log.warning("released: skipping %d bad pair(s) in %s: %s", len(bad), where, named)
    if not good:
        raise UserError(f"released: no valid pair of type '{anomaly_type}' in {path} [{category}]")
    return good


class Released(Synthesizer):
    Options = ReleasedOptions
    fit_scope = "none"
    description = "published generated pairs of a method, read from a folder (no training)"
    selftest_skip = "replays a folder of released pairs the user supplies; nothing to run without one"

    def __init__(self, options=None, weights: str = "pretrained") -> None:
        super().__init__(options, weights)
        self.shortfall: dict[str, int] = {}

    @classmethod
    def default_variant(cls, options: dict) -> str | None:
        """The outputs of another method are labelled with that method's name (`released/seas`)."""
        layout = options.get("layout")
        return layout if layout in NAMED_LAYOUTS else None

    def check(self) -> None:
        require_folder(self.options.path, "method released: options.path",
                       "point it at the unpacked folder of released pairs")
        layout, path = self.options.layout, Path(self.options.path).expanduser()
        if layout in NAMED_LAYOUTS and not any(list_types(path, layout, c) for c in list_categories(path, layout)):
            raise UserError(f"method released: options.path: {path} holds no <category>/<type> folders of the "
                            f"'{layout}' layout; check options.layout (see `acbench_methods.released.layouts`)")

    def generate(self, data: CategoryData, request: GenerationRequest) -> Iterator[Sample]:
        o = self.options
        pairs = valid_pairs(Path(o.path), o.layout, data.category, request.anomaly_type, data.image_size, o.on_bad)
        if len(pairs) < request.count:
            log.warning("released: %s/%s has %d valid pairs, %d requested; using all of them",
                        data.category, request.anomaly_type, len(pairs), request.count)
            self.shortfall[f"{data.category}/{request.anomaly_type}"] = request.count - len(pairs)
        for pair in pairs[: request.count]:
            yield Sample(pair.image, pair.mask, request.anomaly_type, source_normal="")

    def provenance(self) -> dict:
        return {"released_path": str(self.options.path), "layout": self.options.layout,
                "shortfall": dict(self.shortfall)}


def import_released(path: Path, out: Path, layout: str = "anomalydiffusion", categories: list[str] | None = None,
                    on_bad: str = "error", method: str | None = None) -> dict[str, int]:
    """Convert a folder of released pairs once into SyntheticSets `<out>/<category>/`; pairs per category.

    `method` fills the index's method column: by default `released`, or `released/<layout>` for the
    layouts of a named method (seas, dfmgan).
    """
    if method is None:
        method = f"released/{layout}" if layout in NAMED_LAYOUTS else "released"
    available = list_categories(path, layout)
    chosen = categories or available
    for category in chosen:
        if category not in available:
            raise UserError(f"released: category '{category}' not found in {path}; found: {', '.join(available)}")
    written = {}
    for category in chosen:
        types = list_types(path, layout, category)
        if not types:
            raise UserError(f"released: no defect-type folders of the '{layout}' layout under {path}/{category}; "
                            "check options.layout (see `acbench_methods.released.layouts`)")
        samples = (Sample(p.image, p.mask, atype)
                   for atype in types for p in valid_pairs(path, layout, category, atype, None, on_bad))
        written[category] = write_synthetic_set(out / category, samples, category, method, seed=0)
    return written
