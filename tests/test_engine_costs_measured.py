"""The calibrated planner: hardware measurements kept as data price `acbench plan`, each with its device,
date, settings and command, and the plan says per stage which figures are measured and which estimated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from engine_helpers import run_cli

from acbench.engine.costs import CALIBRATION_FILE, FIGURES, calibrated_figures
from acbench.engine.overview import plan_study
from acbench.protocol import load_protocol

REPO = Path(__file__).resolve().parent.parent

# MVTec AD's categories and defect types (the published layout), written as empty files: the planner only
# counts them.
MVTEC_TYPES = {
    "bottle": 3, "cable": 8, "capsule": 5, "carpet": 5, "grid": 5, "hazelnut": 4, "leather": 5, "metal_nut": 4,
    "pill": 7, "screw": 5, "tile": 5, "toothbrush": 1, "transistor": 4, "wood": 5, "zipper": 7,
}


def mvtec_skeleton(root: Path) -> Path:
    for category, n_types in MVTEC_TYPES.items():
        for folder in ("train/good", "test/good"):
            (root / category / folder).mkdir(parents=True)
            (root / category / folder / "000.png").write_bytes(b"")
        for t in range(n_types):
            (root / category / "test" / f"type{t}").mkdir(parents=True)
            (root / category / "test" / f"type{t}" / "000.png").write_bytes(b"")
            (root / category / "ground_truth" / f"type{t}").mkdir(parents=True)
            (root / category / "ground_truth" / f"type{t}" / "000_mask.png").write_bytes(b"")
    return root


@pytest.fixture
def mvtec_full(tmp_path, monkeypatch):
    monkeypatch.setenv("MVTEC_ROOT", str(mvtec_skeleton(tmp_path / "mvtec")))
    for var in ("DTD_ROOT", "REALNET_SDAS_MVTEC"):
        (tmp_path / var / "images").mkdir(parents=True)
        monkeypatch.setenv(var, str(tmp_path / var))
    return load_protocol(REPO / "protocols" / "mvtec_full.yaml")


def test_every_measurement_names_its_device_date_settings_and_command():
    entries = yaml.safe_load(CALIBRATION_FILE.read_text())["figures"]
    assert len({e["key"] for e in entries}) == len(entries)
    for e in entries:
        assert {"key", "seconds", "basis", "device", "date", "settings", "source"} <= set(e), e["key"]
        assert e["basis"] in ("measured", "scaled") and e["seconds"] > 0
        assert e["source"].startswith("benchmarks/") and (REPO / e["source"].split()[0]).is_file()
    figures = calibrated_figures()
    # AnomalyControl on one H200: 3.22 images/s at batch 8
    assert figures["generate:anomalycontrol:sd15"].seconds == pytest.approx(1 / 3.22, rel=1e-3)
    assert figures["generate:anomalycontrol:sd15"].per_image
    assert "H200, 2026-11-30" in figures["detect:unet-localization:paper"].source


def test_mvtec_full_plan_uses_the_measurements_and_says_which(mvtec_full, tmp_path):
    stages = {s.stage: s for s in plan_study(mvtec_full, tmp_path / "run").stages}
    detect = stages["detect"]
    measured = calibrated_figures()
    unet = measured["detect:unet-localization:paper"]
    assert detect.keys["detect:unet-localization:paper"] == unet.source
    assert detect.keys["detect:patchcore:paper"].startswith("measured on")
    # per seed: methods x categories jobs of each synthetic-trained detector, one patchcore job per category
    n_methods, n_cats, n_seeds = len(mvtec_full.methods), len(MVTEC_TYPES), len(mvtec_full.seeds)
    expected = n_seeds * (n_methods * n_cats * (unet.seconds + measured["detect:supersimplenet-supervised:paper"]
                                                .seconds) + n_cats * measured["detect:patchcore:paper"].seconds) / 3600
    assert detect.gpu_hours == pytest.approx(expected)
    assert detect.measured_gpu_hours == pytest.approx(detect.gpu_hours)
    # generation: AnomalyControl measured per image, AnomalyDiffusion (ldm) still a preset guess
    gen = stages["generate"]
    assert gen.keys["generate:anomalycontrol:sd15"].startswith("measured on")
    assert gen.keys["generate:anomalydiffusion:ldm"] == FIGURES["fit"].source == "preset figure"
    images = 1000 * sum(MVTEC_TYPES.values()) * len(mvtec_full.seeds)
    assert gen.measured_gpu_hours == pytest.approx(images * measured["generate:anomalycontrol:sd15"].seconds / 3600)
    quality = stages["quality"]
    assert quality.keys["quality:ic-lpips"].startswith("measured on")
    assert quality.keys["quality:fid"] == "preset figure"


def test_plan_command_prints_basis_per_stage_and_total(mvtec_full, monkeypatch, capsys, tmp_path):
    assert run_cli(monkeypatch, "plan", REPO / "protocols" / "mvtec_full.yaml", "--out", tmp_path / "run",
                   "--no-jobs") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "detect: measured: detect:patchcore:paper (measured on 1x NVIDIA H200, 2026-11-30)" in out
    assert "detect:unet-localization:paper (scaled from a measurement on 1x NVIDIA H200, 2026-11-30)" in out
    fit_basis = out.split("fit: estimated (preset figure): ", 1)[1].split(" total GPU-hours")[0]
    assert "fit:anomalycontrol:sd15" in fit_basis.split(", ")
    assert "total GPU-hours:" in out and "priced from measurements" in out
