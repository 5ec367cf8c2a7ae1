"""`acbench verify`: finished jobs re-run from the manifest reproduce bit for bit; a tampered artifact is named."""

from __future__ import annotations

import json

import numpy as np
from engine_helpers import run_cli, write_protocol

from PIL import Image

from acbench.engine.verify import verify_run


def test_verify_reproduces_and_names_what_differs(monkeypatch, capsys, tmp_path):
    run = tmp_path / "run"
    assert run_cli(monkeypatch, "run", write_protocol(tmp_path), "--out", run, "--quiet") == 0
    capsys.readouterr()
    verdicts = verify_run(run, all_jobs=True)
    assert len(verdicts) == 2 and {v.job_id.split("/")[0] for v in verdicts} == {"generate", "quality"}
    assert all(v.reproduced for v in verdicts), verdicts
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))

    # tamper with one generated image and with one quality row: both are caught, the rest reproduces
    generated = next((run / "artifacts" / "generate").rglob("images/*.png"))
    pixels = np.array(Image.open(generated))
    pixels[0, 0] ^= 0xFF
    Image.fromarray(pixels).save(generated)
    rows_file = next((run / "artifacts" / "quality").rglob("rows.json"))
    rows = json.loads(rows_file.read_text())
    rows[0]["value"] = float(rows[0]["value"]) + 1.0
    rows_file.write_text(json.dumps(rows))
    code = run_cli(monkeypatch, "verify", run, "--all")
    out = capsys.readouterr().out
    assert code == 1
    assert "1 file(s) with other bytes" in out and "rows differ" in out and "0 of 2 jobs reproduced" in out
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before  # nothing left behind
