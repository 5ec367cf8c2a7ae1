"""Resumable training state for the diffusion methods' fits (accelerate's full state: model, optimiser,
RNGs), saved every N steps and swapped in atomically, so a killed fit resumes where it stopped."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from accelerate import Accelerator

log = logging.getLogger(__name__)


def resume_state(accelerator: Accelerator, state_dir: Path, label: str) -> int:
    """Load the last saved state of `state_dir` into the accelerator's objects; the step it was saved at (0: none)."""
    marker = state_dir / "step.json"
    if not marker.is_file():
        return 0
    accelerator.load_state(str(state_dir / "state"))
    step = int(json.loads(marker.read_text())["step"])
    log.info("%s: resuming training from step %d (%s)", label, step, state_dir)
    return step


def save_state(accelerator: Accelerator, state_dir: Path, step: int) -> None:
    """Write the new state beside the old one, then swap: a crash never leaves a half-written state."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / "state.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.save_state(str(tmp), safe_serialization=True)
    shutil.rmtree(state_dir / "state", ignore_errors=True)
    tmp.rename(state_dir / "state")
    (state_dir / "step.json").write_text(json.dumps({"step": step}))
