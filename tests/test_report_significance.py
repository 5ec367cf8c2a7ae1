"""Marks of image AUROC / AP decided by a paired bootstrap over the test images (and over seeds where
there are enough): predictions.csv written by hand, table values computed from them with scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_helpers import manifest, write_predictions, write_run
from sklearn.metrics import average_precision_score, roc_auc_score

from acbench.report import render_report
from acbench.report.formats import metric_grid, to_latex, to_markdown
from acbench.report.headline import headline_grid
from acbench.report.load import prepare
from acbench.report.significance import RunPredictions, attach_image_tests
from acbench.report.tables import MEAN_ROW, TEST_IMAGES, TEST_UNITS, build_tables

DETECTOR = "unet-localization"


def _labels(n_pos: int, n_neg: int) -> np.ndarray:
    return np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]


def _scores(labels: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Anomalies one unit above normals plus Gaussian noise: larger noise, lower AUROC."""
    return labels + np.random.default_rng(seed).normal(0, noise, labels.size)


def _rows(scores: dict[str, dict[str, list[np.ndarray]]], labels: dict[str, np.ndarray]) -> pd.DataFrame:
    """Result rows whose image AUROC / AP are those of the given per-seed scores (scikit-learn)."""
    rows = []
    for label, cats in scores.items():
        for cat, per_seed in cats.items():
            for seed, s in enumerate(per_seed):
                method, _, variant = label.partition("/")
                for metric, fn in (("image_auroc", roc_auc_score), ("image_ap", average_precision_score)):
                    rows.append({"method": method, "variant": variant, "category": cat, "seed": seed, "stage": "detect",
                                 "detector": DETECTOR, "anomaly_type": "", "metric": metric, "scope": "image",
                                 "value": fn(labels[cat], s), "weights": "pretrained"})
    return pd.DataFrame(rows)


def _study(root, scores, labels, tested: bool = True):
    """Writes the predictions under `root`; tables by metric, with the image test attached when `tested`."""
    for label, cats in scores.items():
        for cat, per_seed in cats.items():
            for seed, s in enumerate(per_seed):
                write_predictions(root, DETECTOR, label, cat, seed, labels[cat], s)
    frame = prepare(_rows(scores, labels))
    tables = build_tables(frame)
    if tested:
        attach_image_tests(tables, RunPredictions(root, frame))
    return {t.metric: t for t in tables}


def test_a_method_ahead_on_every_resample_is_marked_with_one_seed(tmp_path):
    labels = {"bottle": _labels(60, 60)}
    y = labels["bottle"]
    scores = {"a": {"bottle": [y * 10.0 + np.linspace(0, 1, y.size)]},  # perfect: AUROC 1 on every resample
              "b": {"bottle": [_scores(y, 1.0, 1)]}, "c": {"bottle": [_scores(y, 10.0, 2)]}}
    table = _study(tmp_path, scores, labels)["image_auroc"]
    assert table.mean.at["bottle", "a"] == 1.0 > table.mean.at["bottle", "b"] > table.mean.at["bottle", "c"]
    assert (table.image_test.replicates("bottle", "a", "b") > 0).all()
    assert table.ranks("bottle") == {"a": 1, "b": 2}
    assert table.decided["bottle"] == {TEST_IMAGES}  # one seed: the images alone decide
    # the same numbers without predictions: one seed cannot separate anything over seeds
    plain = _study(tmp_path / "plain", scores, labels, tested=False)["image_auroc"]
    assert plain.ranks("bottle") == {} and plain.decided["bottle"] == set()
    assert _study(tmp_path / "again", scores, labels)["image_ap"].ranks("bottle") == {"a": 1, "b": 2}


def test_predictions_equal_up_to_noise_are_a_tie(tmp_path):
    labels = {"bottle": _labels(30, 30)}
    base = _scores(labels["bottle"], 1.0, 0)
    noisy = base + np.random.default_rng(1).normal(0, 0.05, base.size)
    table = _study(tmp_path, {"a": {"bottle": [base]}, "b": {"bottle": [noisy]}}, labels)["image_auroc"]
    assert table.display(table.mean.at["bottle", "a"]) != table.display(table.mean.at["bottle", "b"])
    assert table.ranks("bottle") == {} and table.decided["bottle"] == {TEST_IMAGES}
    better, worse = sorted("ab", key=lambda lb: -table.mean.at["bottle", lb])
    assert table.image_test.low("bottle", better, worse, 1) < 0


def test_with_three_seeds_images_and_seeds_must_both_separate(tmp_path):
    labels = {"bottle": _labels(60, 60)}
    y = labels["bottle"]
    perfect = y * 10.0 + np.linspace(0, 1, y.size)
    # a is far ahead in seeds 0 and 1 and a little behind in seed 2: the images agree (mean over seeds),
    # the three seeds do not (one resample of the seeds is seed 2 three times)
    a = [perfect, perfect, _scores(y, 0.9, 3)]
    b = [_scores(y, 0.9, 4), _scores(y, 0.9, 5), _scores(y, 0.8, 6)]
    table = _study(tmp_path, {"a": {"bottle": a}, "b": {"bottle": b}}, labels)["image_auroc"]
    per_seed = table.units["bottle"]
    diff = (per_seed["a"] - per_seed["b"]).to_numpy()
    assert (diff[:2] > 0.1).all() and diff[2] < 0  # the setting this test needs
    assert table.image_test.low("bottle", "a", "b", 1) > 0  # the images separate them...
    assert table.ranks("bottle") == {}  # ...the seeds do not: a tie
    assert table.decided["bottle"] == {TEST_IMAGES, TEST_UNITS}
    cell = metric_grid(table).rows[0][1].text
    assert " ± " in cell  # mean ± std over the three seeds
    summary = headline_grid(list(_study(tmp_path / "h", {"a": {"bottle": a}, "b": {"bottle": b}}, labels).values()))
    assert " ± " in summary.rows[0][summary.header.index("image AUROC (%) ↑")].text


def test_paired_statistic_by_hand(tmp_path):
    labels = {"bottle": _labels(3, 4), "cable": _labels(4, 3)}
    scores = {lb: {cat: [_scores(y, 1.0, 10 * i + j) for j in range(2)] for cat, y in labels.items()}
              for i, lb in enumerate(("a", "b"))}
    tables = _study(tmp_path, scores, labels)
    for metric, fn in (("image_auroc", roc_auc_score), ("image_ap", average_precision_score)):
        test = tables[metric].image_test
        per_category = {}
        for cat, y in labels.items():
            got = test.replicates(cat, "a", "b")
            (draws, n_pos), = [v for (c, *_), v in test.predictions._draws.items() if c == cat]
            assert n_pos == y.sum() and draws.shape == (2000, y.size)
            expected = []
            for d in draws[:50]:  # the same images for both methods and both seeds
                if len(set(y[d])) < 2:
                    pytest.fail("stratified draws must keep both classes")
                expected.append(np.mean([fn(y[d], scores["a"][cat][s][d]) - fn(y[d], scores["b"][cat][s][d])
                                         for s in range(2)]))
            assert got[:50] == pytest.approx(expected, abs=1e-12)
            per_category[cat] = got
        mean = test.replicates(MEAN_ROW, "a", "b")
        assert mean == pytest.approx((per_category["bottle"] + per_category["cable"]) / 2)
        assert test.low(MEAN_ROW, "a", "b", 1) == pytest.approx(np.percentile(mean, 2.5))
        assert test.low(MEAN_ROW, "a", "b", -1) == pytest.approx(np.percentile(-mean, 2.5))


def test_predictions_that_do_not_reproduce_the_table_are_not_used(tmp_path):
    labels = {"bottle": _labels(40, 40)}
    y = labels["bottle"]
    scores = {"a": {"bottle": [y * 10.0]}, "b": {"bottle": [_scores(y, 3.0, 2)]}}
    tables = _study(tmp_path, scores, labels)
    assert tables["image_auroc"].ranks("bottle") == {"a": 1}
    write_predictions(tmp_path, DETECTOR, "b", "bottle", 0, y, _scores(y, 0.1, 2))  # a stale file: b now perfect
    frame = prepare(_rows(scores, labels))
    stale = next(t for t in build_tables(frame) if t.metric == "image_auroc")
    attach_image_tests([stale], RunPredictions(tmp_path, frame))
    assert stale.image_test.replicates("bottle", "a", "b") is None
    assert stale.ranks("bottle") == {} and stale.decided["bottle"] == set()  # back to the seeds: one seed, a tie


def test_report_notes_say_which_test_decided(tmp_path):
    labels = {c: _labels(30, 30) for c in ("bottle", "cable", "grid")}
    scores = {"perlin": {c: [y * 10.0] for c, y in labels.items()},
              "crop-paste": {c: [_scores(y, 1.5, i)] for i, (c, y) in enumerate(labels.items())}}
    run = write_run(tmp_path / "run", _rows(scores, labels), manifest(), with_samples=False)
    for label, cats in scores.items():
        for cat, (s,) in cats.items():
            write_predictions(run, DETECTOR, label, cat, 0, labels[cat], s)
    render_report(run, formats=["md", "tex"], sample_grids=False)
    table_md = (run / "report" / "tables" / f"image_auroc__{DETECTOR}.md").read_text()
    assert "category rows — test images;" in table_md and "mean row — test images + categories × seeds" in table_md
    assert "| **100.0** |" in table_md  # perlin is best in every row, the mean row included
    tex = (run / "report" / "tables" / f"image_auroc__{DETECTOR}.tex").read_text()
    assert r"\textbf{100.0}" in tex and "mean row --- test images + categories $\\times$ seeds" in tex
    summary = (run / "report" / "tables" / "summary.md").read_text()
    assert "image AUROC — test images + categories × seeds" in summary and "**100.0**" in summary
    page = (run / "report" / "index.html").read_text()
    assert "image AUROC — test images + categories × seeds" in page
    # without predictions the same tables keep the rule over seeds and its note
    grid = metric_grid(next(t for t in build_tables(prepare(_rows(scores, labels))) if t.metric == "image_auroc"))
    assert "test images" not in to_markdown(grid) + to_latex(grid)


def test_ablation_layout_uses_the_image_test(tmp_path):
    from acbench.report.ablation import ablation_grid

    labels = {"bottle": _labels(60, 60)}
    y = labels["bottle"]
    variants = {"full": y * 10.0, "no_csm": _scores(y, 1.0, 1), "no_asea": _scores(y, 10.0, 2)}
    scores = {f"anomalycontrol/{v}": {"bottle": [s]} for v, s in variants.items()}
    tables = list(_study(tmp_path, scores, labels).values())
    methods = [{"name": "anomalycontrol", "variant": v, "options": {"ablation": v}} for v in variants]
    grid = ablation_grid(tables, methods)
    auroc = grid.header.index(next(h for h in grid.header if h.startswith("image AUROC")))
    assert {row[0].text: row[auroc].rank for row in grid.rows} == {"full": 1, "no_csm": 2, "no_asea": 0}
    assert "over test images too" in grid.notes[0]


def test_a_merged_leaderboard_tests_on_the_runs_predictions(tmp_path):
    """`acbench compare` copies each run's predictions under the merged labels (a method in both runs gets
    the run in its label), so the merged table is marked by the image test as each run's own is."""
    from acbench.report.leaderboard import merge_runs
    from acbench.report.load import load_run

    labels = {"bottle": _labels(60, 60)}
    y = labels["bottle"]
    runs = {"one": {"a": {"bottle": [y * 10.0 + np.linspace(0, 1, y.size)]}, "b": {"bottle": [_scores(y, 1.0, 1)]}},
            "two": {"b": {"bottle": [_scores(y, 1.0, 3)]}, "c": {"bottle": [_scores(y, 10.0, 2)]}}}
    roots = []
    for name, scores in runs.items():
        _study(tmp_path / name, scores, labels, tested=False)  # writes the predictions
        write_run(tmp_path / name, _rows(scores, labels), manifest(), with_samples=False)
        roots.append(tmp_path / name)
    board = merge_runs(roots, tmp_path / "board")
    merged = load_run(board).frame
    assert set(merged["label"]) == {"a", "b/@one", "b/@two", "c"}

    def image_auroc():
        table = {t.metric: t for t in build_tables(merged)}["image_auroc"]
        attach_image_tests([table], RunPredictions(board, merged))
        return table

    table = image_auroc()
    assert table.ranks("bottle")["a"] == 1 and table.decided["bottle"] == {TEST_IMAGES}
    assert len(list((board / "predictions").rglob("predictions.csv"))) == 4
    for p in (board / "predictions").rglob("predictions.csv"):
        p.unlink()
    table = image_auroc()  # without the copies: one seed, no test decides
    assert table.ranks("bottle") == {} and table.decided["bottle"] == set()
