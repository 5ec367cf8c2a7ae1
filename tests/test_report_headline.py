"""The headline table: one row per method, means over categories, significance-aware marks, published values."""

from __future__ import annotations

import pandas as pd
from report_helpers import manifest, write_run

from acbench.report import render_report
from acbench.report.headline import grouped_labels, headline_grid
from acbench.report.load import prepare
from acbench.report.references import load_references
from acbench.report.tables import build_tables


def _rows():
    rows = []
    values = {"crop-paste": (0.80, 0.31), "perlin": (0.60, 0.20), "anomalycontrol/full": (0.70, 0.40),
              "anomalycontrol/no_sga": (0.50, 0.35)}
    for label, (ap, lp) in values.items():
        method, _, variant = label.partition("/")
        for cat, shift in (("bottle", 0.0), ("cable", 0.02), ("grid", -0.01)):
            for seed, jitter in enumerate((0.0, 0.004, -0.004)):
                base = {"method": method, "variant": variant, "category": cat, "seed": seed, "anomaly_type": "",
                        "weights": "pretrained"}
                rows.append({**base, "stage": "detect", "detector": "unet-localization", "metric": "pixel_ap",
                             "scope": "pixel", "value": ap + shift + jitter})
                rows.append({**base, "stage": "quality", "detector": "", "metric": "ic_lpips_ad", "scope": "quality",
                             "value": lp + jitter})
    for cat in ("bottle", "cable", "grid"):  # the no-synthesis reference detector: not the headline detector
        rows.append({"method": "none", "variant": "", "category": cat, "seed": 0, "anomaly_type": "",
                     "weights": "pretrained", "stage": "detect", "detector": "patchcore", "metric": "pixel_ap",
                     "scope": "pixel", "value": 0.9})
    return pd.DataFrame(rows)


def _frame():
    return prepare(_rows())


def test_headline_rows_columns_and_marks():
    grid = headline_grid(build_tables(_frame()))
    assert grid.header[:3] == ["method", "IC-LPIPS (AnomalyDiffusion) ↑", "pixel AP (%) ↑"]
    names = [r[0].text for r in grid.rows]
    assert names == ["crop-paste", "perlin", "anomalycontrol / full", "anomalycontrol / no_sga"]
    by = {r[0].text: r for r in grid.rows}
    # mean over categories of per-category means: crop-paste pixel AP = 0.80 + mean(0, .02, -.01) = 0.8033
    assert by["crop-paste"][2].text.startswith("80.3 ± ")
    assert by["crop-paste"][2].rank == 1 and by["anomalycontrol / full"][2].rank == 2
    assert by["anomalycontrol / full"][1].rank == 1 and by["anomalycontrol / no_sga"][1].rank == 2
    assert any("unet-localization" in n for n in grid.notes)


def test_variants_grouped_under_their_method():
    assert grouped_labels(["a/x", "b", "a/y", "c", "b/z"]) == ["a/x", "a/y", "b", "b/z", "c"]


def test_published_values_beside_with_source(tmp_path):
    (tmp_path / "ref.yaml").write_text("""
paper: X
citation: X et al.
tables:
  - id: t1
    title: quality
    source: X Table 2
    provenance: primary
    dataset: mvtec_ad
    protocol: p
    columns: {ic: {metric: ic_lpips_ad}}
    methods:
      - {name: Crop&Paste, acbench: crop-paste, values: {mean: [0.14]}}
""")
    grid = headline_grid(build_tables(_frame()), load_references(tmp_path), "mvtec_ad")
    assert grid.header[-1] == "published (source)"
    by = {r[0].text: r for r in grid.rows}
    assert by["crop-paste"][-1].text == "IC-LPIPS (AnomalyDiffusion) 0.14 (X Table 2)"
    assert by["perlin"][-1].text == "–"
    assert headline_grid(build_tables(_frame()), load_references(tmp_path), "visa").header[-1] != "published (source)"


def test_report_opens_with_the_summary(tmp_path):
    run = write_run(tmp_path / "run", _rows(), manifest(), with_samples=False)
    index = render_report(run)
    page = index.read_text()
    assert page.index("Summary") < page.index("Generation quality") < page.index("<details>")
    md = (run / "report" / "index.md").read_text()
    assert md.index("Summary") < md.index("Generation quality")
    tex = (run / "report" / "tables" / "summary.tex").read_text()
    assert r"\toprule" in tex and "crop-paste" in tex
    assert (run / "report" / "tables" / "summary.csv").exists()


def test_no_rows_no_headline():
    assert headline_grid([]) is None


def test_page_renders_in_headless_chromium_with_summary_and_figure(tmp_path):
    """The HTML as a browser builds it (Chromium's DOM, offline, fresh profile): the summary table and the
    headline figure are there. Skipped where Chromium is not installed (apt-get install chromium)."""
    import shutil
    import subprocess

    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed")
    run = write_run(tmp_path / "run", _rows(), manifest(), with_samples=False)
    page = render_report(run)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    summary = dom[dom.index('id="summary"'):]
    assert "<table" in summary.split('id="generation-quality"')[0]
    assert "crop-paste" in summary and "data:image/png;base64," in summary.split('id="generation-quality"')[0]
