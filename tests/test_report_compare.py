"""`acbench compare`: several run folders, one leaderboard; refusal when they measured different things."""

from __future__ import annotations

import pandas as pd
from engine_helpers import error_lines, run_cli
from report_helpers import manifest, results_frame, write_run


def _run(root, methods=None, **protocol_changes):
    frame = results_frame()
    if methods:
        frame = frame[frame["method"].isin(methods)]
    data = manifest()
    data["protocol"].update(protocol_changes)
    return write_run(root, frame, data, with_samples=False)


def test_two_runs_one_leaderboard_rows_keep_their_run(monkeypatch, capsys, tmp_path):
    a = _run(tmp_path / "cluster-a", methods=["perlin", "crop-paste"])
    b = _run(tmp_path / "cluster-b", methods=["crop-paste", "cutpaste"])
    code = run_cli(monkeypatch, "compare", a, b, "--out", tmp_path / "board")
    assert code == 0, capsys.readouterr().err
    rows = pd.read_csv(tmp_path / "board" / "results.csv", keep_default_na=False)
    assert set(rows["run"]) == {"cluster-a", "cluster-b"}
    assert len(rows) == len(pd.read_csv(a / "results.csv")) + len(pd.read_csv(b / "results.csv"))
    # perlin only in a, cutpaste only in b: unchanged; crop-paste in both: one row per run
    crop = rows[rows["method"] == "crop-paste"]
    assert set(crop["variant"]) == {"@cluster-a", "@cluster-b"}
    assert set(rows.loc[rows["method"] == "perlin", "variant"]) == {""}
    page = (tmp_path / "board" / "report" / "index.html").read_text()
    assert "Summary" in page and "runs compared" in page and "cluster-b" in page


def test_runs_with_another_split_are_refused(monkeypatch, capsys, tmp_path):
    a = _run(tmp_path / "a")
    other = manifest()["protocol"]["dataset"] | {"split": {"fraction": 0.5, "order": "sorted", "seed": 0}}
    b = _run(tmp_path / "b", dataset=other)
    code = run_cli(monkeypatch, "compare", a, b, "--out", tmp_path / "board")
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1 and "dataset.split" in lines[0] and str(b) in lines[0]
    assert not (tmp_path / "board").exists()
