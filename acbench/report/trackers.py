"""Log a finished run to the experiment trackers researchers already use (`report: {trackers: [...]}`).

- `mlflow`: one MLflow run per study (protocol as parameters, report folder as artifacts) with one
  nested run per method × category × seed holding that cell's result rows as metrics and its method,
  variant, category and seed as tags. Tracking URI: `$MLFLOW_TRACKING_URI`, else a local file store in
  `<run>/mlruns` (MLflow 3 keeps the file store only on request; acbench asks for it there).
- `tensorboard`: scalars `<metric>/<detector or quality>/<method>/<category>[/<type>]` at step = seed in
  `<run>/tensorboard`, and the protocol as text.
- `wandb`: offline in `<run>/wandb` unless `WANDB_MODE` says otherwise; the result rows as a table,
  the report folder as an artifact.

Each tracker is an optional dependency (`pip install acbench[trackers]`); a missing one is named in one
line before the study starts (see `missing_trackers`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pandas as pd

MODULES = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb"}
CELL = ["label", "method", "variant", "category", "seed"]


def missing_trackers(trackers: list[str]) -> list[str]:
    return [t for t in trackers if importlib.util.find_spec(MODULES[t]) is None]


def _rows(run_dir: Path) -> pd.DataFrame:
    """Every result row with a value (category-level and per defect type)."""
    from acbench.report.load import load_run

    frame = load_run(run_dir).frame
    return frame[frame["value"].notna()] if not frame.empty else frame


def _metric_name(row) -> str:
    name = f"{row.detector}.{row.metric}" if row.detector else row.metric
    return f"{name}.{row.anomaly_type}" if row.anomaly_type else name


def _flat(prefix: str, value, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value, default=str)[:500]
    return out


def log_mlflow(run_dir: Path, manifest: dict, rows: pd.DataFrame) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    name = manifest.get("protocol", {}).get("name", "acbench")
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    parent = client.create_run(experiment_id, run_name=run_dir.name, tags={"acbench.run_dir": str(run_dir)})
    params = _flat("", manifest.get("protocol", {}), {})
    keys = list(params)
    for i in range(0, len(keys), 100):  # MLflow takes at most 100 parameters per batch
        client.log_batch(parent.info.run_id, params=[Param(k, params[k]) for k in keys[i:i + 100]])
    for cell, part in rows.groupby(CELL, sort=False):
        tags = dict(zip(CELL, (str(v) for v in cell), strict=True))
        child = client.create_run(experiment_id, run_name=f"{tags['label']} {tags['category']} seed {tags['seed']}",
                                  tags={"mlflow.parentRunId": parent.info.run_id, **tags})
        metrics = [Metric(_metric_name(r), float(r.value), 0, int(tags["seed"]) if tags["seed"].isdigit() else 0)
                   for r in part.itertuples()]
        client.log_batch(child.info.run_id, metrics=metrics,
                         tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(child.info.run_id)
    report = run_dir / "report"
    if report.is_dir():
        client.log_artifacts(parent.info.run_id, str(report), artifact_path="report")
    client.set_terminated(parent.info.run_id)
    return uri


def log_tensorboard(run_dir: Path, manifest: dict, rows: pd.DataFrame) -> str:
    from torch.utils.tensorboard import SummaryWriter

    folder = run_dir / "tensorboard"
    writer = SummaryWriter(str(folder))
    try:
        writer.add_text("protocol", "```\n" + json.dumps(manifest.get("protocol", {}), indent=2, default=str) + "\n```")
        for r in rows.itertuples():
            step = int(r.seed) if str(r.seed).isdigit() else 0
            where = f"{r.category}/{r.anomaly_type}" if r.anomaly_type else r.category
            writer.add_scalar(f"{r.metric}/{r.detector or 'quality'}/{r.label}/{where}", float(r.value), step)
    finally:
        writer.close()
    return str(folder)


def log_wandb(run_dir: Path, manifest: dict, rows: pd.DataFrame) -> str:
    import wandb

    run = wandb.init(project=manifest.get("protocol", {}).get("name", "acbench"), dir=str(run_dir),
                     mode=os.environ.get("WANDB_MODE", "offline"), config=manifest.get("protocol", {}),
                     name=run_dir.name, reinit=True)
    try:
        run.log({"results": wandb.Table(dataframe=rows[CELL + ["detector", "metric", "value"]])})
        report = run_dir / "report"
        if report.is_dir():
            artifact = wandb.Artifact(f"{run_dir.name}-report", type="report")
            artifact.add_dir(str(report))
            run.log_artifact(artifact)
    finally:
        run.finish()
    return str(run_dir / "wandb")


LOGGERS = {"mlflow": log_mlflow, "tensorboard": log_tensorboard, "wandb": log_wandb}


def log_run(run_dir: str | Path, trackers: list[str]) -> dict[str, str]:
    """Log a run folder's results to each tracker; returns tracker -> where it was written."""
    run_dir = Path(run_dir)
    if not trackers:
        return {}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows = _rows(run_dir)
    return {name: LOGGERS[name](run_dir, manifest, rows) for name in trackers}
