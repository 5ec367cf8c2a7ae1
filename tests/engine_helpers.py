"""Helpers shared by the engine tests: a tiny protocol, the CLI run in-process, results as a table."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from acbench import cli

TINY = {
    "name": "tiny",
    "dataset": {"kind": "demo", "categories": ["brick"]},
    "methods": [{"name": "cutpaste", "variant": "patch", "options": {"mode": "patch"}}],
    "generation": {"per_type": 2},
    "metrics": ["pair-stats", "mask-alignment"],
    "weights": "pretrained-or-random",
}


def write_protocol(folder: Path, **changes) -> Path:
    path = folder / "protocol.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def run_cli(monkeypatch, *args) -> int:
    """`acbench ARGS` through the real entry point (user errors -> exit 2), in this process."""
    monkeypatch.setattr(sys, "argv", ["acbench", *map(str, args)])
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def results(root: Path) -> pd.DataFrame:
    frame = pd.read_csv(root / "results.csv", keep_default_na=False)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


def leftovers(root: Path) -> list[Path]:
    """Anything half-written: temporary folders/files, or files in an artifact folder without its marker."""
    bad = [p for p in root.rglob("*") if p.name.startswith((".tmp-", ".old-")) or p.name.endswith(".tmp")]
    for folder, dirs, files in os.walk(root / "artifacts"):
        if "DONE.json" in files:
            dirs.clear()  # a finished artifact: complete by construction
        elif files:
            bad.append(Path(folder))
    return bad


class _Entry:
    """What `importlib.metadata.EntryPoint` offers the registry: a name and `load()`."""

    def __init__(self, name: str, obj) -> None:
        self.name, self._obj = name, obj

    def load(self):
        return self._obj


def _needs_weights_method():
    from acbench.synthesis import Sample, Synthesizer, WeightRequirement
    from acbench.weights import resolve_torch_hub_file

    class NeedsWeights(Synthesizer):
        """Paints a box; declares (and resolves) a torch-hub checkpoint like a real network would."""

        description = "test method that needs a weights file"

        def required_weights(self):
            return [WeightRequirement("tiny-backbone", "a backbone checkpoint", filename="tiny-backbone.pth")]

        def generate(self, data, request):
            resolve_torch_hub_file("tiny-backbone", "tiny-backbone.pth", None, policy=self.weights_policy)
            for i in range(request.count):
                image = data.normal_image(i).copy()
                mask = np.zeros(image.shape[:2], bool)
                mask[8:24, 8:24] = True
                image[mask] = 255
                yield Sample(image, mask, request.anomaly_type)

    return NeedsWeights


@pytest.fixture
def needs_weights(monkeypatch, tmp_path):
    """A method plugin `needs-weights` registered for this test; TORCH_HOME is an empty temporary folder."""
    from acbench import registry

    real = registry._entry_points
    extra = _Entry("needs-weights", _needs_weights_method())

    def entry_points(kind):
        found = dict(real(kind))
        if kind == "methods":
            found[extra.name] = extra
        return found

    monkeypatch.setattr(registry, "_entry_points", entry_points)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints" / "tiny-backbone.pth"
