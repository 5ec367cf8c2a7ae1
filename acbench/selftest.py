"""`acbench selftest`: every registered method, metric and detector once, on a small built-in study.

The check a user runs after installing on a new machine: one demo category, two synthetic pairs per
method, each quality metric on the pairs the methods made, each detector trained for one short epoch.
Plugins are found through the registry, so a newly registered plugin is covered without any change here.

Sizes per device: on `cuda` the full-size architectures (random weights: speed and device placement
do not depend on weight values) with the shortest schedules; on `cpu` the tiny presets. A plugin
states its own self-test options in a class attribute::

    selftest_options = {"cpu": {"model": "tiny", "schedule": "tiny"}, "cuda": {"model": "sd15-arch", ...}}

Without it, a method gets its entry of `protocols/demo.yaml` (when that file is at hand), else its
defaults. Detectors run their `paper` preset on a GPU and `tiny` on the CPU, for one epoch of a few
samples where their options allow it.

`DeviceAudit` (used by `--audit` and the tests) catches tensors created on a device other than the one a
plugin was given, the failure `perlin` once had on GPU machines: inside it `torch.cuda.is_available()`
answers True, so library code that picks CUDA by itself is exercised on a CPU-only machine, and every
tensor requested on another device type is recorded with the line of code that asked for it.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.overrides import TorchFunctionMode

from acbench import registry
from acbench.errors import UserError

log = logging.getLogger(__name__)

PER_METHOD = 2  # pairs per method and anomaly type
SELFTEST_CATEGORY = "brick"


@dataclass
class CheckResult:
    kind: str  # methods | metrics | detectors
    name: str
    ok: bool
    seconds: float
    reason: str = ""
    wrong_devices: list[str] = field(default_factory=list)

    def line(self) -> str:
        status = ("ok" + (f" ({self.reason})" if self.reason else "")) if self.ok else f"FAILED: {self.reason}"
        return f"{self.kind[:-1]:<8} {self.name:<28} {status} ({self.seconds:.1f}s)"


# --------------------------------------------------------------------------------------------- #
# Device audit

# Torch functions that create a tensor on the device named by their `device` argument.
_FACTORIES = {
    torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint, torch.randperm,
    torch.arange, torch.linspace, torch.logspace, torch.tensor, torch.as_tensor, torch.eye, torch.normal,
    torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like, torch.rand_like, torch.randn_like,
    torch.randint_like, torch.empty_strided, torch.scalar_tensor,
}
_MOVES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.new_empty, torch.Tensor.new_zeros,
          torch.Tensor.new_ones, torch.Tensor.new_full, torch.Tensor.new_tensor}


def _device_arg(func: Callable, args: tuple, kwargs: dict) -> torch.device | None:
    """The device a creating call asks for, or None when it asks for none."""
    if func is torch.Tensor.cuda:
        return torch.device("cuda")
    candidates = [kwargs.get("device")]
    if func is torch.Tensor.to:
        candidates += [a for a in args[1:] if isinstance(a, str | torch.device)]
    for cand in candidates:
        if cand is None or (isinstance(cand, str) and cand not in ("cpu", "meta") and not cand.startswith(
                ("cuda", "cpu:", "mps", "xpu"))):
            continue
        try:
            return torch.device(cand)
        except (RuntimeError, TypeError):
            continue
    return None


def _caller() -> str:
    """The first frame outside torch and this module: the line that asked for the device."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/torch/" not in name and not name.endswith("selftest.py"):
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


class DeviceAudit(TorchFunctionMode):
    """Records every tensor a plugin asks for on an accelerator other than `device` (e.g. on `cuda` when
    it was given `cpu`), and creates it on `device` instead so the run goes on and all such places are
    found in one pass. Explicit CPU tensors are host-side work and allowed on any device.

    While active, `torch.cuda.is_available()` answers True to any caller outside torch itself (a CPU-only
    machine then takes the code paths a GPU machine takes, like anomalib choosing CUDA for its noise when
    no device is passed).
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.wrong: list[str] = []
        self._patched: Any = None

    def __enter__(self):
        real = self._patched = torch.cuda.is_available

        def is_available() -> bool:  # torch's own checks (optimiser, RNG forks) keep the true answer
            caller = sys._getframe(1).f_globals.get("__name__", "")
            return real() if caller == "torch" or caller.startswith("torch.") else True

        torch.cuda.is_available = is_available  # type: ignore[assignment]
        return super().__enter__()

    def __exit__(self, *exc):
        torch.cuda.is_available = self._patched  # type: ignore[assignment]
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FACTORIES or func in _MOVES:
            asked = _device_arg(func, args, kwargs)
            # Host-side work (explicit `cpu`, `.to("cpu")` for numpy) is legitimate under any device; an
            # accelerator the plugin was not given is not.
            if asked is not None and asked.type not in ("cpu", "meta") and asked.type != self.device.type:
                where = _caller()
                entry = f"{getattr(func, '__name__', func)} on {asked} at {where}"
                if entry not in self.wrong:
                    self.wrong.append(entry)
                if func is torch.Tensor.cuda:
                    return args[0].to(self.device)
                if "device" in kwargs:
                    kwargs["device"] = self.device
                else:  # Tensor.to(device, ...)
                    args = tuple(self.device if isinstance(a, str | torch.device) and a is not args[0] else a
                                 for a in args)
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------- #
# Options per plugin


def _demo_method_options() -> dict[str, dict]:
    for folder in (Path(__file__).resolve().parent.parent / "protocols", Path.cwd() / "protocols"):
        path = folder / "demo.yaml"
        if path.is_file():
            out: dict[str, dict] = {}
            for entry in yaml.safe_load(path.read_text()).get("methods", []):
                out.setdefault(entry["name"], entry.get("options") or {})
            return out
    return {}


def plugin_options(cls: type, kind: str, name: str, device_type: str, compile_: bool = False) -> dict[str, Any]:
    """The plugin's self-test options. A method with a `compile` option runs eagerly unless `compile_`:
    compiling a full-size UNet takes about a minute per plugin, which the ~5 min check cannot afford
    (`--compile` includes it; the generation benchmarks measure it)."""
    own = getattr(cls, "selftest_options", None) or {}
    if device_type in own:
        options = dict(own[device_type])
    elif "cpu" in own:
        options = dict(own["cpu"])
    elif kind == "methods":
        options = dict(_demo_method_options().get(name, {}))
    else:
        options = {}
    if "compile" in getattr(getattr(cls, "Options", None), "model_fields", {}) and "compile" not in options:
        options["compile"] = "auto" if compile_ else "off"
    return options


def detector_setup(cls: type, name: str, device_type: str) -> tuple[dict[str, Any], str]:
    options = plugin_options(cls, "detectors", name, device_type)
    fields = getattr(cls.Options, "model_fields", {})
    short = {"epochs": 1, "samples_per_epoch": 16}
    options = {**{k: v for k, v in short.items() if k in fields}, **options}
    presets = getattr(cls, "presets", ("tiny",))
    preset = "paper" if device_type == "cuda" and "paper" in presets else presets[0] if "tiny" not in presets \
        else "tiny"
    return options, preset


# --------------------------------------------------------------------------------------------- #
# The run


@dataclass
class Selftest:
    device: str
    workdir: Path
    audit: bool = False
    only: set[str] | None = None  # plugin names to run (all when None)
    compile: bool = False  # methods with a `compile` option keep its default (`auto`) instead of `off`
    results: list[CheckResult] = field(default_factory=list)

    def _wanted(self, name: str) -> bool:
        return self.only is None or name in self.only

    def _check(self, kind: str, name: str, body: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        audit = DeviceAudit(self.device) if self.audit else None
        try:
            if audit is not None:
                with audit:
                    value = body()
            else:
                value = body()
            wrong = audit.wrong if audit is not None else []
            ok, reason = not wrong, (f"tensor created on another device: {wrong[0]}" if wrong else "")
        except Exception as exc:  # one line per plugin; the traceback goes to the log
            log.debug("selftest %s %s failed:\n%s", kind, name, "".join(traceback.format_exception(exc)))
            value, ok = None, False
            text = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {text[0] if text else ''}"
            wrong = audit.wrong if audit is not None else []
        self.results.append(CheckResult(kind, name, ok, time.perf_counter() - started, reason, wrong))
        return value

    def run(self, on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
        from acbench.data.demo import materialise_demo
        from acbench.data.mvtec import load_category
        from acbench.engine.stages import seed_everything
        from acbench.protocol import SplitConfig
        from acbench.synthesis import GenerationRequest, SyntheticSet, write_synthetic_set

        device_type = torch.device(self.device).type
        data = load_category(materialise_demo(seed=0), SELFTEST_CATEGORY, SplitConfig(), dataset="demo")
        types = sorted(data.synthesis)
        samples = []

        def report() -> None:
            if on_result is not None:
                on_result(self.results[-1])

        for name in registry.names("methods"):
            if not self._wanted(name):
                continue
            cls = registry.load("methods", name)
            if getattr(cls, "selftest_skip", ""):  # e.g. a method that only replays files the user supplies
                self.results.append(CheckResult("methods", name, True, 0.0, f"skipped: {cls.selftest_skip}"))
                report()
                continue

            def method(cls=cls, name=name):
                seed_everything(0)
                synth = cls(cls.Options.model_validate(plugin_options(cls, "methods", name, device_type,
                                                                         self.compile)),
                            weights="random")
                synth.check()
                fit_dir = self.workdir / "fit" / name
                fit_dir.mkdir(parents=True, exist_ok=True)  # the harness gives every fit an existing folder
                if cls.fit_scope != "none":
                    synth.fit([data], fit_dir, seed=0, device=self.device)
                made = []
                for atype in types:
                    request = GenerationRequest(atype, PER_METHOD, 0, fit_dir=fit_dir, device=self.device)
                    made += list(synth.generate(data, request))
                if len(made) != PER_METHOD * len(types):
                    raise RuntimeError(f"asked for {PER_METHOD * len(types)} pairs, got {len(made)}")
                return made

            made = self._check("methods", name, method)
            samples += made or []
            report()

        synthetic = None
        if samples:
            write_synthetic_set(self.workdir / "synthetic", samples, data.category, "selftest", 0)
            synthetic = SyntheticSet(self.workdir / "synthetic")
        for name in registry.names("metrics"):
            if not self._wanted(name):
                continue
            cls = registry.load("metrics", name)
            if synthetic is None:
                self.results.append(CheckResult("metrics", name, False, 0.0, "no method produced pairs"))
            else:
                self._check("metrics", name, lambda cls=cls: cls(weights="random", device=self.device)
                            .score(synthetic, data))
            report()
        for name in registry.names("detectors"):
            if not self._wanted(name):
                continue
            cls = registry.load("detectors", name)
            if synthetic is None and getattr(cls, "uses_synthetic", True):
                self.results.append(CheckResult("detectors", name, False, 0.0, "no method produced pairs"))
                report()
                continue
            options, preset = detector_setup(cls, name, device_type)

            def detector(cls=cls, options=options, preset=preset, name=name):
                det = cls(cls.Options.model_validate(options), preset=preset, weights="random", device=self.device)
                uses = getattr(cls, "uses_synthetic", True)
                return det.run(data, synthetic if uses else None, self.workdir / "detect" / name, 0)

            self._check("detectors", name, detector)
            report()
        return self.results


def run_selftest(device: str, audit: bool = False, only: set[str] | None = None,
                 on_result: Callable[[CheckResult], None] | None = None, compile_: bool = False) -> list[CheckResult]:
    """Every registered plugin (or the `only` ones) once on `device`; one result per plugin."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is visible on this machine (torch "
                        f"{torch.__version__}, built with CUDA {torch.version.cuda}); use --device cpu")
    known = {n for kind in ("methods", "metrics", "detectors") for n in registry.names(kind)}  # type: ignore[arg-type]
    unknown = sorted((only or set()) - known)
    if unknown:
        raise UserError(f"--only: unknown plugin '{unknown[0]}'; known: {', '.join(sorted(known))}")
    with tempfile.TemporaryDirectory(prefix="acbench-selftest-") as tmp:
        return Selftest(device, Path(tmp), audit, only, compile_).run(on_result)


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Plugins' warnings about random weights are expected here: keep the one-line-per-plugin output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
