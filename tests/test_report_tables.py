"""Tables from a hand-made results frame with known values: winners, mean row, formats, ablation,
correlations and bootstrap intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_helpers import PIXEL_AP, manifest, results_frame, write_predictions, write_run
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from acbench.report import load, render_report
from acbench.report.ablation import ablation_grid
from acbench.report.bootstrap import (auroc_replicates, average_precision, ap_replicates, bootstrap_intervals,
                                      cell_interval)
from acbench.report.correlation import correlations
from acbench.report.formats import latex_escape, metric_grid, to_latex, to_markdown
from acbench.report.load import prepare
from acbench.report.tables import attach_intervals, build_tables, table_frame


@pytest.fixture
def tables():
    return {t.metric: t for t in build_tables(prepare(results_frame()))}


def _cells(grid, row):
    return {h: c for h, c in zip(grid.header, next(r for r in grid.rows if r[0].text == row), strict=True)}


def test_mean_row_is_the_mean_of_category_means(tables):
    ap = tables["pixel_ap"]
    for label, cats in PIXEL_AP.items():
        expected = np.mean([np.mean(v) for v in cats.values()])
        assert ap.mean.at["mean", label] == pytest.approx(expected)
        assert ap.mean.at["bottle", label] == pytest.approx(np.mean(cats["bottle"]))
        assert ap.std.at["bottle", label] == pytest.approx(np.std(cats["bottle"], ddof=1))
    assert tables["fid"].mean.at["mean", "crop-paste"] == pytest.approx(45.0)  # per-type rows ignored


def _seeded_table(values: dict[str, dict[str, list[float]]], metric="pixel_ap"):
    """A one-metric table from label -> category -> per-seed values."""
    rows = [{"method": label, "variant": "", "category": cat, "seed": seed, "stage": "detect",
             "detector": "unet-localization" if metric == "pixel_ap" else "", "anomaly_type": "", "metric": metric,
             "scope": "", "value": v, "weights": "pretrained"}
            for label, cats in values.items() for cat, vs in cats.items() for seed, v in enumerate(vs)]
    return next(t for t in build_tables(prepare(pd.DataFrame(rows))) if t.metric == metric)


def test_best_and_second_are_marked_only_where_seeds_separate_them():
    table = _seeded_table({  # higher is better; three seeds per category
        "a": {"bottle": [0.90, 0.91, 0.92], "metal_nut": [0.60, 0.50, 0.70]},
        "b": {"bottle": [0.70, 0.71, 0.72], "metal_nut": [0.58, 0.48, 0.72]},
        "c": {"bottle": [0.50, 0.51, 0.52], "metal_nut": [0.20, 0.21, 0.22]},
    })
    grid = metric_grid(table)
    bottle, metal, mean = _cells(grid, "bottle"), _cells(grid, "metal_nut"), _cells(grid, "mean")
    assert (bottle["a"].rank, bottle["b"].rank, bottle["c"].rank) == (1, 2, 0)
    # metal_nut: a and b overlap seed by seed (a tie), so nothing is marked, not even b over c
    assert (metal["a"].rank, metal["b"].rank, metal["c"].rank) == (0, 0, 0)
    assert table.separated("metal_nut", "b", "c")  # b does beat c there: only the tie above hides it
    # mean row: six (category, seed) pairs: a ahead of b in five, b ahead of c in all
    assert (mean["a"].rank, mean["b"].rank) == (1, 2)
    assert any("paired bootstrap" in note for note in grid.notes)


def test_lower_is_better_and_too_few_seeds_is_a_tie():
    fid = _seeded_table({"a": {"bottle": [30.0, 31.0, 29.0]}, "b": {"bottle": [50.0, 52.0, 51.0]}}, metric="fid")
    assert fid.ranks("bottle") == {"a": 1} and "↓" in fid.title
    one_seed = _seeded_table({"a": {"bottle": [0.9]}, "b": {"bottle": [0.1]}})
    assert one_seed.ranks("bottle") == {}  # one seed: nothing can separate two methods in a category
    two = _seeded_table({"a": {"bottle": [0.9, 0.9]}, "b": {"bottle": [0.1, 0.1]}})
    assert two.ranks("bottle") == {}  # below MIN_PAIRED_UNITS


def test_paired_bootstrap_matches_an_independent_resampling():
    from acbench.report.tables import paired_bootstrap_low

    diff = np.array([0.3, -0.1, 0.2, 0.05, 0.4])
    rng = np.random.default_rng(0)
    means = [diff[rng.integers(0, 5, size=5)].mean() for _ in range(2000)]
    assert paired_bootstrap_low(diff) == pytest.approx(np.percentile(means, 2.5), abs=0.02)
    assert paired_bootstrap_low(np.array([0.1, 0.2, 0.15])) > 0 > paired_bootstrap_low(np.array([0.1, -0.2, 0.15]))


def test_markdown_and_latex(tables):
    grid = metric_grid(tables["pixel_ap"])
    md = to_markdown(grid)
    assert "| metal_nut | 40.0 ± 0.0 | 86.0 ± 1.4 |" in md  # two seeds: a tie, unmarked
    assert "random weights" in md  # the † column is explained
    tex = to_latex(grid)
    assert r"metal\_nut & 40.0 $\pm$ 0.0 & 86.0 $\pm$ 1.4 & 32.0 $\pm$ 2.8 \\" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert "metal_nut" not in tex.replace(r"metal\_nut", "")  # no unescaped underscore anywhere
    assert latex_escape("a_b & 50% #1 {x}") == r"a\_b \& 50\% \#1 \{x\}"


def test_csv_keeps_raw_values_and_flags_random_weights(tables):
    frame = table_frame(tables["pixel_ap"])
    row = frame[(frame["category"] == "bottle") & (frame["method"] == "perlin")].iloc[0]
    assert row["mean"] == pytest.approx(0.55) and row["seeds"] == 2
    assert set(frame.loc[frame["random_weights"], "method"]) == {"cutpaste/patch"}


def test_direction_of_an_unlisted_metric_comes_from_its_plugin(monkeypatch):
    class LowerIsBetter:
        higher_is_better = False

    monkeypatch.setattr("acbench.registry.names", lambda kind: ["my-score"])
    monkeypatch.setattr("acbench.registry.load", lambda kind, name: LowerIsBetter)
    assert load.metric_direction("my_score") is False
    assert load.metric_direction("pixel_ap") is True
    assert load.metric_direction("something_else") is None


def test_ablation_layout():
    rows = []
    for variant, value in {"full": 0.8, "no_csm": 0.7, "no_asea": 0.75, "no_sga": 0.6}.items():
        for seed, jitter in enumerate((-0.001, 0.0, 0.001)):  # three seeds, so the ranking can be decided
            rows.append({"method": "anomalycontrol", "variant": variant, "category": "bottle", "seed": seed,
                         "stage": "detect", "detector": "unet-localization", "anomaly_type": "",
                         "metric": "pixel_ap", "scope": "pixel", "value": value + jitter})
    methods = [{"name": "anomalycontrol", "variant": v, "options": {"ablation": v}}
               for v in ("no_sga", "full", "no_asea", "no_csm")]
    grid = ablation_grid(build_tables(prepare(pd.DataFrame(rows))), methods)
    assert [r[0].text for r in grid.rows] == ["full", "no_csm", "no_asea", "no_sga"]
    assert [[c.text for c in r[1:4]] for r in grid.rows] == [["✓", "✓", "✓"], ["✗", "✓", "✓"],
                                                             ["✓", "✗", "✓"], ["✗", "✗", "✗"]]
    assert grid.rows[0][4].rank == 1 and grid.rows[2][4].rank == 2 and grid.rows[0][4].text == "80.0"
    assert r"\checkmark" in to_latex(grid)


def test_correlations_match_scipy():
    rows = []
    rng = np.random.default_rng(1)
    quality, utility = rng.random(8), rng.random(8)
    for i, (q, u) in enumerate(zip(quality, utility, strict=True)):
        method, category = ("a", "b")[i % 2], f"c{i // 2}"
        base = {"method": method, "variant": "", "category": category, "seed": 0, "anomaly_type": ""}
        rows.append(base | {"stage": "quality", "detector": "", "metric": "ic_lpips", "scope": "quality", "value": q})
        rows.append(base | {"stage": "quality", "detector": "", "metric": "fid", "scope": "quality", "value": q})
        rows.append(base | {"stage": "detect", "detector": "unet-localization", "metric": "pixel_ap",
                            "scope": "pixel", "value": u})
    table = correlations(prepare(pd.DataFrame(rows))).set_index("quality")
    assert table.at["IC-LPIPS", "spearman_rho"] == pytest.approx(spearmanr(quality, utility)[0])
    assert table.at["IC-LPIPS", "kendall_tau"] == pytest.approx(kendalltau(quality, utility)[0])
    assert table.at["FID", "spearman_rho"] == pytest.approx(-spearmanr(quality, utility)[0])  # lower is better
    assert table.at["IC-LPIPS", "points"] == 8


def test_bootstrap_interval_from_predictions(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 30)
    scores = labels + rng.normal(0, 0.8, labels.size)
    point = roc_auc_score(labels, scores)
    write_predictions(tmp_path, "unet-localization", "perlin", "bottle", 0, labels, scores)
    frame = prepare(results_frame())
    intervals = bootstrap_intervals(tmp_path, frame, n_boot=200)
    row = intervals[(intervals["metric"] == "image_auroc") & (intervals["label"] == "perlin")].iloc[0]
    assert row["low"] < point < row["high"] and row["high"] - row["low"] < 0.4
    separated = pd.DataFrame({"file": ["a", "b", "c", "d"], "label": [0, 0, 1, 1], "score": [0.1, 0.2, 0.8, 0.9]})
    assert cell_interval([separated], "image_auroc", 50) == (1.0, 1.0)


def test_bootstrap_interval_appears_in_the_table(tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 1])
    write_predictions(tmp_path, "unet-localization", "perlin", "bottle", 0, labels, [0.1, 0.5, 0.2, 0.6, 0.4, 0.9])
    frame = results_frame()
    frame.loc[frame["metric"] == "pixel_ap", "metric"] = "image_auroc"
    tables = {t.metric: t for t in build_tables(prepare(frame))}
    attach_intervals(tables["image_auroc"], bootstrap_intervals(tmp_path, prepare(frame), n_boot=100))
    text = _cells(metric_grid(tables["image_auroc"]), "bottle")["perlin"].text
    assert text.startswith("55.0 ± 7.1 [") and text.endswith("]")


def test_fast_auroc_and_ap_equal_scikit_learn():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n_pos, n_neg = rng.integers(1, 15, 2)
        scores = np.round(rng.random((3, n_pos + n_neg)), 1)  # rounding makes ties
        labels = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        expected = [roc_auc_score(labels, row) for row in scores]
        assert auroc_replicates(scores, int(n_pos)) == pytest.approx(expected, abs=1e-12)
        expected_ap = [average_precision_score(labels, row) for row in scores]
        assert ap_replicates(scores, int(n_pos)) == pytest.approx(expected_ap, abs=1e-12)
        for row in scores:
            assert average_precision(labels, row) == pytest.approx(average_precision_score(labels, row), abs=1e-12)


def test_rows_selected_on_the_test_set_get_their_own_marked_table():
    frame = results_frame()
    optimistic = frame[frame["metric"] == "pixel_ap"].assign(value=0.99, selection="test")
    frame = pd.concat([frame.assign(selection="last"), optimistic], ignore_index=True)
    tables = [t for t in build_tables(prepare(frame)) if t.metric == "pixel_ap"]
    assert len(tables) == 2
    last, test = sorted(tables, key=lambda t: t.split["selection"])
    assert last.mean.at["bottle", "perlin"] == pytest.approx(0.55)  # never averaged with the optimistic rows
    assert "optimistic" in test.title and "optimistic" not in last.title


def test_protocol_bootstrap_setting_adds_intervals_to_the_report(tmp_path):
    frame = results_frame()
    frame.loc[frame["metric"] == "pixel_ap", "metric"] = "image_auroc"
    data = manifest()
    data["protocol"]["report"]["bootstrap"] = 50
    run = write_run(tmp_path / "run", frame, data, with_samples=False)
    write_predictions(run, "unet-localization", "perlin", "bottle", 0, np.array([0, 0, 0, 1, 1, 1]),
                      [0.1, 0.5, 0.2, 0.6, 0.4, 0.9])
    render_report(run)
    with_ci = (run / "report" / "index.md").read_text()
    render_report(run, bootstrap=0)
    without = (run / "report" / "index.md").read_text()
    assert "± 7.1 [" in with_ci and "± 7.1 [" not in without


def test_generator_tags_are_a_report_fact():
    from acbench.report.load import Run
    from acbench.report.manifest import manifest_facts

    frame = prepare(results_frame())
    frame["generator_preset"] = ["official" if m == "perlin" else "" for m in frame["method"]]
    frame["generator_captions"] = ["template captions — not the paper's" if m == "perlin" else ""
                                   for m in frame["method"]]
    facts = dict(manifest_facts(Run(Path("."), frame, {"protocol": {}}, [])))
    assert facts["generators"] == "perlin: preset official; captions template captions — not the paper's"
