"""A study end to end: resume after an interruption, the lock, and the report."""

from __future__ import annotations

import pandas as pd
import pytest

from acbench.engine import RunStore, run_study
from acbench.engine import stages as stages_module
from acbench.errors import UserError
from acbench.protocol import parse_protocol

SMALL = {
    "name": "small",
    "dataset": {"kind": "demo", "categories": ["brick", "gravel"]},
    "methods": [{"name": "cutpaste"}, {"name": "crop-paste"}],
    "generation": {"per_type": 2},
    "metrics": ["pair-stats", "mask-alignment"],
    "weights": "pretrained-or-random",
}


def _results(root) -> pd.DataFrame:
    frame = pd.read_csv(root / "results.csv", keep_default_na=False)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_interrupted_study_resumes_to_identical_results(tmp_path, monkeypatch):
    protocol = parse_protocol(SMALL)
    reference = run_study(protocol, out=tmp_path / "ref")
    assert reference.ok and len(reference.ran) == 8

    real = stages_module.execute_job
    calls = {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-study
        return real(*args, **kwargs)

    monkeypatch.setattr("acbench.engine.stages.execute_job", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_study(protocol, out=tmp_path / "resumed")
    monkeypatch.setattr("acbench.engine.stages.execute_job", real)

    resumed = run_study(protocol, out=tmp_path / "resumed")
    assert len(resumed.skipped) == 2 and len(resumed.ran) == 6
    pd.testing.assert_frame_equal(_results(tmp_path / "ref"), _results(tmp_path / "resumed"))

    again = run_study(protocol, out=tmp_path / "resumed")
    assert again.ran == [] and len(again.skipped) == 8


def test_changed_option_reruns_only_that_method(tmp_path):
    run_study(parse_protocol(SMALL), out=tmp_path / "run")
    changed = {**SMALL, "methods": [{"name": "cutpaste", "options": {"mode": "scar"}}, {"name": "crop-paste"}]}
    result = run_study(parse_protocol(changed), out=tmp_path / "run")
    assert len(result.ran) == 4 and all("/cutpaste/" in job for job in result.ran)
    assert len(result.skipped) == 4


def test_second_concurrent_run_is_refused(tmp_path):
    holder = RunStore(tmp_path / "run")
    holder.lock()
    try:
        with pytest.raises(UserError, match="locked by a live run"):
            run_study(parse_protocol(SMALL), out=tmp_path / "run")
    finally:
        holder.unlock()


def test_demo_like_study_writes_report(tmp_path):
    """Rows with and without a `weights` column (pair-stats vs a random-weight IC-LPIPS) render together."""
    protocol = {**SMALL, "methods": [{"name": "perlin"}], "metrics": ["pair-stats", "mask-alignment", "ic-lpips"]}
    result = run_study(parse_protocol(protocol), out=tmp_path / "run")
    frame = result.results
    assert set(frame["metric"]) >= {"n_pairs", "mask_area", "mask_precision", "mask_recall"}
    cat_pairs = frame[(frame.metric == "n_pairs") & (frame.anomaly_type == "")]
    assert sorted(cat_pairs.value) == [6.0, 6.0]  # 3 types x 2 pairs, per category
    report = (tmp_path / "run" / "report" / "index.md").read_text()
    assert "### mask precision" in report and "perlin" in report
    assert "random weights" in report.lower()
    assert set(frame.loc[frame.metric == "ic_lpips", "weights"]) == {"random"}
    assert (tmp_path / "run" / "report" / "index.html").is_file()
    assert (tmp_path / "run" / "report" / "samples" / "brick_crack.png").is_file()
    manifest = RunStore(tmp_path / "run").read_json("manifest.json")
    assert manifest["versions"]["torch"] and manifest["protocol_hash"] and manifest["split"]["fraction"] == 0.333
