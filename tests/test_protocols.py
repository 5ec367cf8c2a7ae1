"""Every protocol in protocols/ is documented, validates structurally, and names real plugins.

Structure is checked with the pydantic models now; plugin names and their options are checked
through the registry. A plugin this project ships (an entry point in pyproject.toml) must load: its
absence fails the test; only a third-party plugin that is not installed is a skip.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from acbench import registry
from acbench.protocol import Protocol, parse_protocol

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = sorted((REPO / "protocols").glob("*.yaml"))
ENV_ROOTS = ("MVTEC_ROOT", "VISA_ROOT", "MPDD_ROOT", "BTAD_ROOT", "MTD_ROOT", "MVTEC3D_ROOT", "REALIAD_ROOT",
             "MVTEC_AD2_ROOT", "DTD_ROOT", "REALNET_SDAS_MVTEC", "REALNET_SDAS_VISA")
# protocol -> (dataset.kind, number of categories) of each dataset's full study
DATASET_STUDIES = {"mvtec_full": ("mvtec", 15), "visa_full": ("visa", 12), "mpdd_full": ("mpdd", 6),
                   "btad_full": ("btad", 3), "mtd_full": ("mtd", 1), "mvtec3d_full": ("mvtec3d", 10),
                   "realiad_full": ("realiad", 30), "mvtec_ad2_full": ("mvtec_ad2", 8)}


@pytest.fixture(autouse=True)
def _dataset_roots(monkeypatch, tmp_path):
    for var in ENV_ROOTS:
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_study_protocols_exist():
    names = {p.stem for p in PROTOCOLS}
    assert {"demo", "mvtec_full", "mvtec_ablation", "visa_full", "quick_gpu"} <= names
    assert set(DATASET_STUDIES) <= names


@pytest.mark.parametrize("name", sorted(DATASET_STUDIES))
def test_dataset_studies_name_their_release(name):
    """Each dataset's study reads it as released: its kind, every category, and a header saying where to get
    it, under which licence, and which folder to point at."""
    path = PROTOCOLS[0].parent / f"{name}.yaml"
    kind, n_categories = DATASET_STUDIES[name]
    protocol = Protocol.model_validate(_raw(path))
    assert protocol.dataset.kind == kind and len(protocol.dataset.categories) == n_categories
    assert len(set(protocol.dataset.categories)) == n_categories
    if name == "mvtec_full":  # the reference layout; its header documents the study itself
        return
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    for words in ("Download: http", "Licence: ", "Expected folder (export ", f"--kind {kind}"):
        assert words in header, f"{path.name}: header lacks '{words}'"


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.stem)
def test_protocol_is_documented_at_its_top(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, f"{path.name}: first line must be a '# ' summary"


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.stem)
def test_protocol_structure_validates(path):
    protocol = Protocol.model_validate(_raw(path))
    assert protocol.name == path.stem
    assert protocol.methods


def test_unknown_key_in_a_protocol_is_an_error():
    raw = _raw(PROTOCOLS[0]) | {"generaton": {"per_type": 3}}
    with pytest.raises(ValidationError, match="generaton"):
        Protocol.model_validate(raw)


def test_full_protocols_follow_the_literature():
    full = Protocol.model_validate(_raw(Path(PROTOCOLS[0]).parent / "mvtec_full.yaml"))
    assert len(full.dataset.categories) == 15 and "metal_nut" in full.dataset.categories
    assert full.generation.per_type == 1000
    assert {d.name for d in full.detectors} == {"unet-localization", "supersimplenet-supervised", "patchcore"}
    assert {d.preset for d in full.detectors} == {"paper"}
    assert {"is", "ic-lpips", "ic-lpips-ad", "fid", "kid"} <= set(full.metrics)
    ablation = Protocol.model_validate(_raw(Path(PROTOCOLS[0]).parent / "mvtec_ablation.yaml"))
    assert [m.options["ablation"] for m in ablation.methods] == ["full", "no_csm", "no_asea", "no_sga"]


def _built_in(kind: str) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return set(project["entry-points"].get(f"acbench.{kind}", {}))


def _missing_plugins(raw: dict, built_in: bool) -> list[str]:
    wanted = [("methods", m["name"]) for m in raw.get("methods", [])]
    wanted += [("detectors", d["name"]) for d in raw.get("detectors", [])]
    wanted += [("metrics", m) for m in raw.get("metrics", [])]
    return sorted({f"{kind[:-1]} '{name}'" for kind, name in wanted
                   if name not in registry.names(kind) and (name in _built_in(kind)) == built_in})


def test_built_in_plugins_are_the_registered_ones():
    for kind in ("methods", "detectors", "metrics", "masks"):
        assert _built_in(kind) and _built_in(kind) <= set(registry.names(kind)), kind


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.stem)
def test_protocol_plugins_and_options_validate(path):
    raw = _raw(path)
    assert _missing_plugins(raw, built_in=True) == []  # a broken entry point of ours is a failure
    missing = _missing_plugins(raw, built_in=False)
    if missing:
        pytest.skip(f"{path.name}: third-party plugin(s) not installed: {', '.join(missing)}")
    protocol = parse_protocol(raw, source=str(path))  # names through the registry, options by each Options
    assert protocol.name == path.stem
