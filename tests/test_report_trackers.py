"""Trackers: the real MLflow and TensorBoard packages log a run into a temporary folder; values read back."""

from __future__ import annotations

import pytest
from report_helpers import manifest, results_frame, write_run

from acbench.errors import UserError
from acbench.report.load import prepare
from acbench.report.trackers import log_run, missing_trackers


@pytest.fixture
def run(tmp_path):
    root = write_run(tmp_path / "run", results_frame(), manifest(), with_samples=False)
    (root / "report").mkdir()
    (root / "report" / "index.md").write_text("# report\n")
    return root


def _expected():
    frame = prepare(results_frame())
    return frame[frame["value"].notna()]


def test_mlflow_logs_protocol_rows_and_report(run, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    where = log_run(run, ["mlflow"])["mlflow"]
    assert where == (run / "mlruns").resolve().as_uri()
    client = MlflowClient(tracking_uri=where)
    experiment = client.get_experiment_by_name("unit")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.params["name"] == '"unit"' and parent.data.params["dataset.kind"] == '"mvtec"'
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "report")] == ["report/index.md"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    expected = _expected()
    cells = expected.groupby(["label", "category", "seed"])
    assert len(children) == cells.ngroups
    for child in children:
        tags = child.data.tags
        part = expected[(expected["label"] == tags["label"]) & (expected["category"] == tags["category"])
                        & (expected["seed"].astype(str) == tags["seed"])]
        for row in part.itertuples():
            name = f"{row.detector}.{row.metric}" if row.detector else row.metric
            name = f"{name}.{row.anomaly_type}" if row.anomaly_type else name
            assert child.data.metrics[name] == pytest.approx(row.value)


def test_tensorboard_scalars_read_back(run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = log_run(run, ["tensorboard"])["tensorboard"]
    acc = EventAccumulator(folder)
    acc.Reload()
    expected = _expected()
    tags = acc.Tags()["scalars"]
    row = expected[(expected["metric"] == "pixel_ap") & (expected["label"] == "perlin")
                   & (expected["category"] == "bottle")]
    events = {e.step: e.value for e in acc.Scalars("pixel_ap/unet-localization/perlin/bottle")}
    assert events == {int(r.seed): pytest.approx(r.value) for r in row.itertuples()}
    assert len(tags) == expected.assign(t=expected["metric"] + expected["detector"] + expected["label"]
                                        + expected["category"] + expected["anomaly_type"])["t"].nunique()


def test_a_missing_tracker_is_named_before_the_study(monkeypatch):
    import importlib.util

    from acbench.engine.preflight import check_trackers
    from acbench.protocol import Protocol

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert missing_trackers(["mlflow", "wandb"]) == ["wandb"]
    protocol = Protocol.model_validate({"name": "t", "dataset": {"kind": "demo"}, "methods": [{"name": "cutpaste"}],
                                        "report": {"trackers": ["wandb"]}})
    with pytest.raises(UserError, match=r"report.trackers: wandb not installed"):
        check_trackers(protocol)
