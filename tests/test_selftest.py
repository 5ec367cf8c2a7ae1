"""`acbench selftest`: every registered plugin once, one line each, and the device audit that would have
caught `perlin` creating its noise on CUDA while the image stayed on the CPU."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import _Entry, run_cli

from acbench import registry
from acbench.selftest import DeviceAudit, run_selftest
from acbench.synthesis import Sample, Synthesizer

# Fast plugins of every kind (the diffusion methods on their tiny presets); the slow CPU ones (FID and
# VGG-LPIPS on random full-size networks, anomalib trainers) run in `acbench selftest --device cpu`.
SUBSET = {"cutpaste", "perlin", "crop-paste", "anomalycontrol", "anomalydiffusion",
          "pair-stats", "mask-alignment", "ic-lpips", "unet-localization"}


def test_audit_flags_library_code_that_picks_cuda_by_itself():
    from anomalib.data.utils.generators.perlin import generate_perlin_noise

    with DeviceAudit("cpu") as audit:
        generate_perlin_noise(32, 32, scale=(4, 4), device=torch.device("cpu"))  # explicit: fine
    assert audit.wrong == []
    with DeviceAudit("cpu") as audit:
        noise = generate_perlin_noise(32, 32, scale=(4, 4))  # anomalib's default: CUDA when available
    assert noise.device.type == "cpu"  # created where the plugin runs, so the audit finds all places at once
    assert audit.wrong and all("on cuda" in w for w in audit.wrong)
    assert "anomalib/data/utils/generators/perlin.py" in audit.wrong[0]


def test_audit_flags_moves_and_leaves_torch_internals_alone():
    x = torch.ones(3)
    with DeviceAudit("cpu") as audit:
        assert torch.cuda.is_available()  # what plugin code sees
        y = x.to("cuda") + torch.zeros(3, device="cpu")
        opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))])  # torch's own checks keep the real answer
        opt.zero_grad()
    assert y.device.type == "cpu" and len(audit.wrong) == 1 and audit.wrong[0].startswith("to on cuda")
    assert torch.cuda.is_available() == (torch.cuda.device_count() > 0)  # the patch is undone
    with DeviceAudit("cuda") as audit:  # host-side work under a GPU run is allowed
        torch.zeros(3, device="cpu") + x.to("cpu")
    assert audit.wrong == []


def test_selftest_cpu_every_kind_ok_with_the_audit():
    lines = []
    results = run_selftest("cpu", audit=True, only=SUBSET, on_result=lambda r: lines.append(r.line()))
    assert {r.name for r in results} == SUBSET
    assert {r.kind for r in results} == {"methods", "metrics", "detectors"}
    failed = [r.line() for r in results if not r.ok]
    assert failed == []
    assert len(lines) == len(SUBSET) and all(" ok " in ln for ln in lines)


def test_selftest_catches_the_reintroduced_perlin_bug(monkeypatch):
    """The old `perlin` let anomalib choose the device; on a GPU machine that put the noise on CUDA."""
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

    fixed = PerlinAnomalyGenerator.generate_perturbation

    def old(self, height, width, device=None, anomaly_source_path=None):
        return fixed(self, height, width, None, anomaly_source_path)  # the device the method passed is dropped

    monkeypatch.setattr(PerlinAnomalyGenerator, "generate_perturbation", old)
    (result,) = run_selftest("cpu", audit=True, only={"perlin"})
    assert not result.ok and "tensor created on another device" in result.reason and "on cuda" in result.reason


class _Broken(Synthesizer):
    description = "test method that fails"

    def generate(self, data, request):
        raise RuntimeError("broken on purpose\nsecond line")


class _WrongDevice(Synthesizer):
    description = "test method that ignores its device"

    def generate(self, data, request):
        for i in range(request.count):
            image = data.normal_image(i).copy()
            noise = torch.rand(image.shape[:2], device="cuda" if torch.cuda.is_available() else "cpu")
            yield Sample(image, noise.cpu().numpy() > 0.5, request.anomaly_type)


@pytest.fixture
def extra_methods(monkeypatch):
    real = registry._entry_points
    extra = {"zz-broken": _Entry("zz-broken", _Broken), "zz-wrong-device": _Entry("zz-wrong-device", _WrongDevice)}

    def entry_points(kind):
        return {**real(kind), **extra} if kind == "methods" else real(kind)

    monkeypatch.setattr(registry, "_entry_points", entry_points)


def test_new_plugins_are_found_through_the_registry(extra_methods, monkeypatch, capsys):
    code = run_cli(monkeypatch, "selftest", "--device", "cpu", "--only", "zz-broken", "--only", "zz-wrong-device",
                   "--only", "cutpaste", "--only", "pair-stats")
    out = capsys.readouterr().out
    assert code == 1
    lines = {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith(("method", "metric"))}
    assert set(lines) == {"zz-broken", "zz-wrong-device", "cutpaste", "pair-stats"}
    assert "FAILED: RuntimeError: broken on purpose" in lines["zz-broken"] and "second line" not in out
    assert "FAILED: tensor created on another device: rand on cuda" in lines["zz-wrong-device"]
    assert " ok " in lines["cutpaste"] and " ok " in lines["pair-stats"]
    assert "2 ok, 2 failed on cpu" in out


def test_cli_exit_codes(monkeypatch, capsys):
    assert run_cli(monkeypatch, "selftest", "--device", "cpu", "--only", "crop-paste") == 0
    assert "1 ok, 0 failed" in capsys.readouterr().out
    assert run_cli(monkeypatch, "selftest", "--device", "cpu", "--only", "no-such-plugin") == 2
    assert "--only: unknown plugin 'no-such-plugin'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert run_cli(monkeypatch, "selftest", "--device", "cuda") == 2
        assert "no CUDA device is visible" in capsys.readouterr().err


def test_sizes_per_device_come_from_the_plugins_or_the_demo_protocol():
    from acbench.selftest import detector_setup, plugin_options

    control = registry.load("methods", "anomalycontrol")
    assert plugin_options(control, "methods", "anomalycontrol", "cuda")["model"] == "sd15"
    assert plugin_options(control, "methods", "anomalycontrol", "cpu")["model"] == "tiny"
    # compiling a full-size UNet costs about a minute per plugin: eager unless asked for
    assert plugin_options(control, "methods", "anomalycontrol", "cuda")["compile"] == "off"
    assert plugin_options(control, "methods", "anomalycontrol", "cuda", compile_=True)["compile"] == "auto"
    assert control.Options.model_validate(plugin_options(control, "methods", "anomalycontrol", "cpu")).compile == "off"
    memseg = registry.load("methods", "memseg")  # no hook: its demo.yaml entry; no compile option
    assert plugin_options(memseg, "methods", "memseg", "cuda") == {"texture_path": "demo:textures"}
    unet = registry.load("detectors", "unet-localization")
    assert detector_setup(unet, "unet-localization", "cuda") == ({"epochs": 1, "samples_per_epoch": 16}, "paper")
    assert detector_setup(unet, "unet-localization", "cpu")[1] == "tiny"


@pytest.mark.parametrize("device_type", ["cuda", "cpu"])
def test_every_method_accepts_its_own_selftest_options(device_type):
    from acbench.selftest import plugin_options

    for name in registry.names("methods"):
        cls = registry.load("methods", name)
        if getattr(cls, "selftest_skip", ""):
            continue
        cls.Options.model_validate(plugin_options(cls, "methods", name, device_type))  # raises if not
