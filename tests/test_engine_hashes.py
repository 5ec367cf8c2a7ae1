"""What a job hash covers: a dataset-scope fit's categories, the dataset root, the weights found, the device.

A hash that leaves out something a job reads lets a re-run reuse an artifact built from other inputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from engine_helpers import TINY, _Entry, error_lines, run_cli, write_protocol

from acbench import registry
from acbench.engine import run_study
from acbench.engine.plan import ALL_CATEGORIES, plan
from acbench.protocol import parse_protocol
from acbench.synthesis import Sample, Synthesizer, WeightRequirement


class _DatasetFitMethod(Synthesizer):
    """Learns the category list (like AnomalyDiffusion's per-category embeddings); generate needs its own."""

    description = "test method with a dataset-scope fit"
    fit_scope = "dataset"

    def required_weights(self):
        return [WeightRequirement("tiny-backbone", "a backbone checkpoint", filename="tiny-backbone.pth")]

    def fit(self, categories, workdir, seed, device="cpu"):
        (workdir / "categories.json").write_text(json.dumps(sorted(c.category for c in categories)))

    def generate(self, data, request):
        seen = json.loads((request.fit_dir / "categories.json").read_text())
        if data.category not in seen:
            raise RuntimeError(f"no embedding for '{data.category}': the fit never saw it")
        for i in range(request.count):
            image = data.normal_image(i).copy()
            mask = np.zeros(image.shape[:2], bool)
            mask[4:12, 4:12] = True
            image[mask] = 0
            yield Sample(image, mask, request.anomaly_type)


@pytest.fixture
def dataset_fit(monkeypatch, tmp_path):
    real = registry._entry_points

    def entry_points(kind):
        found = dict(real(kind))
        if kind == "methods":
            found["dataset-fit"] = _Entry("dataset-fit", _DatasetFitMethod)
        return found

    monkeypatch.setattr(registry, "_entry_points", entry_points)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints" / "tiny-backbone.pth"


def _protocol(categories, **changes):
    return parse_protocol({**TINY, "methods": [{"name": "dataset-fit"}], "metrics": ["pair-stats"],
                           "generation": {"per_type": 1}, "dataset": {"kind": "demo", "categories": categories},
                           **changes})


def _fit_hash(protocol, categories, device="cpu"):
    return next(j.hash for j in plan(protocol, categories, device) if j.stage == "fit")


def test_a_dataset_fit_hash_covers_its_categories_and_keeps_the_others_jobs(dataset_fit):
    one, two = _protocol(["brick"]), _protocol(["brick", "grass"])
    jobs = plan(one, ["brick"])
    assert [j.id for j in jobs if j.stage == "fit"] == [f"fit/dataset-fit/{ALL_CATEGORIES}/0"]
    assert _fit_hash(one, ["brick"]) != _fit_hash(two, ["brick", "grass"])
    assert _fit_hash(two, ["brick", "grass"]) == _fit_hash(two, ["grass", "brick"])  # order is not content


def test_adding_a_category_reruns_the_dataset_fit(dataset_fit, tmp_path):
    out = tmp_path / "run"
    assert run_study(_protocol(["brick"]), out=out, report=False).ok
    result = run_study(_protocol(["brick", "grass"]), out=out, report=False)
    assert result.ok, result.failed  # grass is generated from a fit that saw grass
    assert f"fit/dataset-fit/{ALL_CATEGORIES}/0" in result.ran
    assert "generate/dataset-fit/grass/0" in result.ran and "generate/dataset-fit/brick/0" in result.ran
    assert json.loads((out / "artifacts" / "fit" / "dataset-fit" / ALL_CATEGORIES / "0" /
                       "categories.json").read_text()) == ["brick", "grass"]


def test_a_fit_hash_covers_dataset_root_split_size_weights_and_device(dataset_fit, tmp_path):
    for kind in ("a", "b"):
        (tmp_path / kind).mkdir()
    base = _protocol(["brick"])
    h = _fit_hash(base, ["brick"])
    data = {"kind": "demo", "categories": ["brick"]}
    assert _fit_hash(_protocol(["brick"], dataset={**data, "split": {"order": "random"}}), ["brick"]) != h
    assert _fit_hash(_protocol(["brick"], dataset={**data, "image_size": 64}), ["brick"]) != h
    assert _fit_hash(base, ["brick"], "cuda") != h
    assert _fit_hash(base, ["brick"], "cuda:1") == _fit_hash(base, ["brick"], "cuda:0")
    roots = [_fit_hash(_protocol(["brick"], dataset={"kind": "mvtec", "root": str(tmp_path / k)}), ["brick"])
             for k in ("a", "b")]
    assert roots[0] != roots[1]
    # a weight that appears in the cache under pretrained-or-random: the fit no longer runs on random weights
    dataset_fit.parent.mkdir(parents=True)
    dataset_fit.write_bytes(b"weights")
    assert _fit_hash(base, ["brick"]) != h


def _ray_protocol(tmp_path, **executor):
    return write_protocol(tmp_path, executor={"kind": "ray", **executor})


def test_ray_with_auto_device_and_no_gpus_per_job_is_refused_on_a_gpu_machine(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code = run_cli(monkeypatch, "run", _ray_protocol(tmp_path), "--out", tmp_path / "run", "--quiet")
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1
    assert "executor.device" in lines[0] and "gpus_per_job" in lines[0]
    assert not (tmp_path / "run" / "artifacts").exists()


def test_the_device_of_a_study_is_decided_once_and_recorded_per_job(monkeypatch, tmp_path):
    from acbench.engine.stages import study_device

    ray_cfg = {**TINY, "executor": {"kind": "ray", "gpus_per_job": 1}}
    assert study_device(parse_protocol(ray_cfg)) == "cuda"  # the workers get GPUs, whatever the driver has
    assert study_device(parse_protocol({**TINY, "executor": {"kind": "ray", "device": "cpu"}})) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert study_device(parse_protocol({**TINY, "executor": {"kind": "ray"}})) == "cpu"  # no GPUs to hide
    result = run_study(parse_protocol(TINY), out=tmp_path / "run", report=False)
    markers = [json.loads(p.read_text()) for p in (tmp_path / "run" / "artifacts").rglob("DONE.json")]
    assert result.ok and len(markers) == 2 and {m["device"] for m in markers} == {"cpu"}


def test_a_worker_without_the_planned_gpu_fails_its_job_instead_of_using_the_cpu(monkeypatch, tmp_path):
    from acbench.engine.plan import plan as make_plan
    from acbench.engine.store import RunStore
    from acbench.engine.worker import run_job

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    protocol = parse_protocol(TINY)
    job = make_plan(protocol, ["brick"], "cuda")[0]
    outcome = run_job(protocol.model_dump_json(), str(tmp_path / "run"), job, "cuda")
    assert outcome.status == "failed" and outcome.user_error and "sees no GPU" in outcome.error
    assert not RunStore(tmp_path / "run").is_done(job)
