"""Published reference tables load, validate against their schema, and compare with measured values."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from report_helpers import results_frame

from acbench.errors import UserError
from acbench.report.load import prepare
from acbench.report.references import REFERENCES_DIR, compare, load_reference_file, load_references
from acbench.report.tables import build_tables

MVTEC = ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
         "tile", "toothbrush", "transistor", "wood", "zipper"]


def test_every_reference_file_validates():
    files = sorted(REFERENCES_DIR.glob("*.yaml"))
    assert files, "reports/references/ holds no reference file"
    for path in files:
        ref = load_reference_file(path)
        assert ref.citation and all(t.source for t in ref.tables)


def test_anomalydiffusion_table1_matches_its_published_averages():
    tables = {t.id: t for _, t in load_references()}
    table1 = tables["anomalydiffusion_table1_generation"]
    for method in table1.methods:
        per_cat = pd.DataFrame({c: method.values[c] for c in MVTEC}).T
        assert per_cat.mean().round(2).tolist() == pytest.approx(method.values["mean"], abs=0.011), method.name
    anomalydiffusion = next(m for m in tables["anomalydiffusion_table3_localization"].methods
                            if m.name == "AnomalyDiffusion")
    assert anomalydiffusion.values["mean"] == [99.1, 81.4, 76.3, 99.2, 99.7, 98.7]


def _write(tmp_path, payload: dict):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


def _valid() -> dict:
    return {"paper": "P", "citation": "C", "tables": [{
        "id": "t1", "title": "T", "source": "P Table 1", "provenance": "primary", "dataset": "mvtec_ad",
        "protocol": "x", "columns": {"pixel_ap": {"metric": "pixel_ap", "detector": "unet-localization",
                                                  "scale": 100}},
        "methods": [{"name": "Crop&Paste", "acbench": "crop-paste", "values": {"bottle": [70.0], "mean": [80.0]}}],
    }]}


def test_schema_rejects_unknown_keys_and_wrong_row_lengths(tmp_path):
    assert load_reference_file(_write(tmp_path, _valid())).tables[0].id == "t1"
    bad = _valid()
    bad["tables"][0]["colums"] = {}
    with pytest.raises(UserError, match="colums"):
        load_reference_file(_write(tmp_path, bad))
    bad = _valid()
    bad["tables"][0]["methods"][0]["values"]["bottle"] = [1.0, 2.0]
    with pytest.raises(UserError, match="2 values for 1 columns"):
        load_reference_file(_write(tmp_path, bad))


def test_paper_beside_acbench_with_difference(tmp_path):
    ref = load_reference_file(_write(tmp_path, _valid()))
    tables = build_tables(prepare(results_frame()))
    (title, frame), = compare(tables, [(ref, t) for t in ref.tables], "mvtec_ad")
    assert title.startswith("Crop&Paste (paper) vs Crop&Paste (acbench: crop-paste)")
    assert frame.loc["bottle", "pixel AP (%) (paper)"] == 70.0
    assert frame.loc["bottle", "pixel AP (%) (acbench)"] == pytest.approx(75.0)  # 0.75 measured, in percent
    assert frame.loc["mean", "pixel AP (%) Δ"] == pytest.approx(0.5)  # 80.5 - 80.0
    assert compare(tables, [(ref, t) for t in ref.tables], "visa") == []  # other dataset: no comparison


def test_no_number_rests_on_an_ai_written_summary_alone():
    """The research note's conflicts: DualAnoDiff 1.93/0.38, CDC 1.65/0.07, AnomalyAny 2.02/0.33, NSA 1.44/0.26 and
    RealNet 1.64/0.30 are known only from AI-written paper notes; none of them may appear as a published value."""
    refs = load_references(REFERENCES_DIR)
    rows = {(m.name, tuple(m.values.get("mean", []))) for _ref, table in refs for m in table.methods}
    for name, values in [("DualAnoDiff", (1.93, 0.38)), ("CDC", (1.65, 0.07)), ("AnomalyAny", (2.02, 0.33)),
                         ("NSA", (1.44, 0.26)), ("RealNet", (1.64, 0.30))]:
        assert not any(n == name and v[:2] == values for n, v in rows), name


def test_anomalycontrol_placeholder_is_valid_and_empty():
    tables = [t for _ref, t in load_references(REFERENCES_DIR) if t.id.startswith("anomalycontrol_")]
    assert tables and all(t.provenance == "not-retrieved" for t in tables)
    assert all(v is None for t in tables for m in t.methods for vs in m.values.values() for v in vs)


def test_seas_readme_generation_rows_as_printed():
    seas = {t.id: t for _ref, t in load_references(REFERENCES_DIR) if t.id.startswith("seas_readme_generation")}
    assert set(seas) == {f"seas_readme_generation_{d}" for d in ("mvtec", "visa", "mvtec3d")}
    row = next(m for m in seas["seas_readme_generation_mvtec"].methods if m.name == "SeaS")
    assert row.values["mean"] == [1.88, 0.34, 0.04, 0.18] and row.acbench == "released/seas"
