"""AnomalyControl (He et al., arXiv 2412.06510): SD-inpainting guided by cross-modal anomaly semantics.

Modules: `csm` (BLIP-2 Q-Former multimodal features + ASEA guidance), `sga` (decoupled cross-attention
adapter on diffusers' IP-Adapter processors), `train` (adapter training with accelerate), `model`
(assembly and batched inference), `presets` (sd15 / tiny networks; paper / fast / tiny schedules),
`plugin` (the `anomalycontrol` Synthesizer).
"""

from acbench_methods.anomalycontrol.plugin import AnomalyControl

__all__ = ["AnomalyControl"]
