"""DualAnoDiff (Jin et al., CVPR 2025) re-implemented on diffusers from the paper and a description of
the official code (which ships no licence; nothing is copied from it).

What is learned, per (category, anomaly type) on the synthesis split: on a frozen SD-1.5, a rank-32
LoRA per branch on every attention layer, a cross-branch attention in every attention layer that
lets the whole-image ("blend") branch and the anomaly-only ("fg") branch see each other, and a LoRA
on the text encoder (`attention.py`, `train.py`). Generation denoises both branches together from
noise (100 PNDM steps, CFG 2.5) and takes the mask from the anomaly branch (`sampling.py`: a
documented threshold, or a U2-Net given as a TorchScript file). The default variant generates the
background too (no normal image is used); `variant: bcm` (background compensation) adds a
reference-only attention on a normal training image and paints onto that image, so pixels outside
the mask are the normal image's. Settings: `presets.py`; the plugin: `plugin.py`.
"""

from acbench_methods.dualanodiff.plugin import DualAnoDiff, DualAnoDiffOptions

__all__ = ["DualAnoDiff", "DualAnoDiffOptions"]
