"""`executor: {kind: local, workers: N}`: jobs side by side in worker processes give the one-process results."""

from __future__ import annotations

import pandas as pd
from engine_helpers import TINY, leftovers, results

from acbench.engine import run_study
from acbench.protocol import parse_protocol


def test_worker_processes_equal_one_process(tmp_path):
    protocol = {**TINY, "dataset": {"kind": "demo", "categories": ["brick", "grass"]}}
    one = run_study(parse_protocol(protocol), out=tmp_path / "one", report=False)
    pooled_protocol = parse_protocol({**protocol, "executor": {"kind": "local", "workers": 2}})
    pooled = run_study(pooled_protocol, out=tmp_path / "pool", report=False)
    assert one.ok and pooled.ok and len(pooled.ran) == len(one.ran) == 4
    pd.testing.assert_frame_equal(results(tmp_path / "one"), results(tmp_path / "pool"))
    for image in (tmp_path / "one" / "artifacts" / "generate").rglob("*.png"):
        twin = tmp_path / "pool" / image.relative_to(tmp_path / "one")
        assert twin.read_bytes() == image.read_bytes()
    assert leftovers(tmp_path / "pool") == []
