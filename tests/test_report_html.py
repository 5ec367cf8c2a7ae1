"""The rendered report: self-contained HTML naming the weights, banner for random weights, files."""

from __future__ import annotations

import re

from report_helpers import manifest, results_frame, write_run

from acbench.report import render_report


def test_html_is_self_contained_and_flags_random_weights(tmp_path):
    run = write_run(tmp_path / "run", results_frame(random_label="cutpaste/patch"), manifest())
    index = render_report(run)
    page = index.read_text()
    assert index.name == "index.html"
    assert not re.search(r"https?://", page), "the page must not reference the network"
    assert not re.search(r"<(script|link|iframe)\b", page)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]+)"', page))
    assert 'class="banner"' in page and "RANDOM WEIGHTS" in page
    assert "Weights used" in page and "pretrained" in page and "cutpaste/patch" in page
    assert "86.0 ± 1.4" in page and "<b>86.0 ± 1.4</b>" not in page  # two seeds cannot decide a winner: no bold
    assert "Published numbers beside measured ones" in page  # crop-paste has published values
    assert page.count("<img") >= 3  # bar charts and the sample grid
    tables = run / "report" / "tables"
    assert (tables / "pixel_ap__unet-localization.tex").is_file() and (tables / "fid.csv").is_file()
    assert (run / "report" / "figures" / "bars_fid.pdf").is_file()  # the protocol asks for LaTeX: PDF figures
    render_report(run, formats=["md", "csv"])
    assert (run / "report" / "figures" / "bars_fid.png").is_file()
    assert not (run / "report" / "figures" / "bars_fid.pdf").exists()  # no LaTeX, no PDF copies
    assert (run / "report" / "index.md").read_text().startswith("# unit")


def test_no_banner_without_random_weights(tmp_path):
    run = write_run(tmp_path / "run", results_frame(random_label=None), manifest(), with_samples=False)
    page = render_report(run).read_text()
    assert 'class="banner"' not in page
    assert "pretrained" in page


def test_random_provenance_of_an_artifact_raises_the_banner(tmp_path):
    run = write_run(tmp_path / "run", results_frame(random_label=None), manifest(), with_samples=False)
    marker = run / "artifacts" / "fit" / "perlin" / "bottle" / "0" / "DONE.json"
    marker.parent.mkdir(parents=True)
    marker.write_text('{"hash": "x", "provenance": {"random_weights": true}}')
    page = render_report(run).read_text()
    assert 'class="banner"' in page and "fit/perlin/bottle/0" in page


def test_empty_run_still_renders(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"protocol": {"name": "empty"}}')
    page = render_report(run).read_text()
    assert "No results yet" in page


def test_sample_grids_show_methods_on_the_same_normal_images():
    from pathlib import Path

    from acbench.report.samples import shared_choice
    from acbench.synthesis import SyntheticRecord

    def rec(method: str, normal: str) -> SyntheticRecord:
        return SyntheticRecord(Path("i.png"), Path("m.png"), "bottle", "crack", method, 0, normal)

    chosen = shared_choice({
        "a": [rec("a", "n1"), rec("a", "n2"), rec("a", "n3")],
        "b": [rec("b", "n9"), rec("b", "n3"), rec("b", "n2")],
        "c": [rec("c", "n3"), rec("c", "n7")],
    }, k=2)
    assert [r.source_normal for r in chosen["a"]] == ["n3", "n2"]  # n3 used by all three, n2 by two
    assert [r.source_normal for r in chosen["b"]] == ["n3", "n2"]
    assert [r.source_normal for r in chosen["c"]] == ["n3", "n7"]  # no n2: filled with its own image


def test_a_folder_that_is_not_a_run_is_a_user_error(tmp_path):
    import pytest

    from acbench.errors import UserError

    with pytest.raises(UserError, match="manifest.json missing"):
        render_report(tmp_path)
