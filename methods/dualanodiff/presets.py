"""Networks (`sd15`, `sd15-arch`, `tiny`) and schedules (`paper`, `tiny`) of DualAnoDiff.

`paper` follows the official scripts (`dual-interrelated_diff/train.sh`, `inference_mvtec_split.py`):
SD-1.5 at 512 px, LoRA rank 32, batch 4, AdamW at a constant 2e-5 without warm-up, 5000 steps, the
prompts "a vfx with sks" (whole image) and "sks" (anomaly only), the text encoder's LoRA trained too,
sampling with SD-1.5's PNDM scheduler, 100 steps, CFG 2.5. With `variant: bcm` the paper schedule is
the BCM scripts' (`bcm-dual-interrelated_diff/`): batch 2, prompt "a srw", 50 steps, CFG 2.0.
`tiny` is for tests and the CPU demo (64 px, rank 4, a few steps).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelPreset:
    diffusion: str  # build_text2img_components model name
    resolution: int


@dataclass(frozen=True)
class Schedule:
    rank: int
    train_steps: int
    batch_size: int
    learning_rate: float
    checkpoint_every: int
    inference_steps: int
    guidance: float
    prompt_blend: str
    prompt_fg: str


MODELS = {
    "sd15": ModelPreset("sd15", 512),
    "sd15-arch": ModelPreset("sd15-arch", 512),
    "tiny": ModelPreset("tiny", 64),
}

PAPER = Schedule(rank=32, train_steps=5000, batch_size=4, learning_rate=2e-5, checkpoint_every=500,
                 inference_steps=100, guidance=2.5, prompt_blend="a vfx with sks", prompt_fg="sks")
SCHEDULES = {
    "paper": PAPER,
    # The BCM scripts; their anomaly-branch prompt is not stated separately, the default one is kept.
    "paper-bcm": replace(PAPER, batch_size=2, inference_steps=50, guidance=2.0, prompt_blend="a srw"),
    "tiny": Schedule(rank=4, train_steps=4, batch_size=2, learning_rate=1e-3, checkpoint_every=2,
                     inference_steps=4, guidance=2.5, prompt_blend="a vfx with sks", prompt_fg="sks"),
}


def schedule_for(name: str, variant: str) -> Schedule:
    """The named schedule; `paper` means the BCM scripts' settings for the BCM variant."""
    return SCHEDULES["paper-bcm" if (name == "paper" and variant == "bcm") else name]
