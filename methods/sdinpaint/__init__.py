"""`sd-inpaint`: the training-free inpainting baseline of anomaly synthesis.

A frozen inpainting model paints "a photo of a {object} with a {defect}" (plus a negative prompt)
into a normal image under a target mask from any mask source (default `real-augmented`); the result
is composited onto the normal image so every pixel outside the mask is the original's. Optionally a
sample whose mean change inside the mask stays below a threshold is painted again. Presets: `sd15`
(SD-1.5-inpainting, 50 steps, CFG 7.5, strength 1.0), `diag` (DIAG's SDXL-inpainting, 30 steps,
CFG 20, strength 0.99, its negative prompt and mask crop), `tiny` / `tiny-diag` (random networks).

Modules: `presets` (settings, prompt template), `sdxl` (SDXL-inpainting networks), `plugin`.
"""

from acbench_methods.sdinpaint.plugin import SDInpaint

__all__ = ["SDInpaint"]
