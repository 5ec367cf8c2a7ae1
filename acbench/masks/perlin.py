"""DRAEM's Perlin-noise mask, shared by every Perlin-family method (DRAEM, DeSTSeg, MemSeg, GLASS, RealNet).

All of them draw the noise scale per axis as 2**k with k uniform in [min, max), rotate the noise by a
uniform angle in ±`rotation` degrees (bilinear, zero fill) and threshold it (0.5). The noise itself is
anomalib's `generate_perlin_noise`; everything random comes from the caller's numpy generator, and the
noise is made on the CPU whatever accelerator the machine has (anomalib otherwise picks CUDA when it
exists, which broke CPU-side synthesis on GPU machines).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF


def perlin_noise(shape: tuple[int, int], rng: np.random.Generator, scale_exponents: tuple[int, int] = (0, 6),
                 rotation: float = 90.0) -> np.ndarray:
    """Rotated Perlin noise (float32 HxW, roughly in [-1, 1]) with DRAEM's random scale per axis."""
    from anomalib.data.utils.generators.perlin import generate_perlin_noise  # slow import, only when used

    sy, sx = (2 ** int(k) for k in rng.integers(*scale_exponents, size=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**31 - 1)))
        noise = generate_perlin_noise(shape[0], shape[1], scale=(sy, sx), device=torch.device("cpu"))
    angle = float(rng.uniform(-rotation, rotation))
    if angle:
        noise = TF.rotate(noise[None], angle, interpolation=TF.InterpolationMode.BILINEAR)[0]
    return noise.numpy().astype(np.float32)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, scale_exponents: tuple[int, int] = (0, 6),
                threshold: float = 0.5, rotation: float = 90.0) -> np.ndarray:
    """DRAEM's binary anomaly mask: rotated Perlin noise above `threshold` (bool HxW, may be empty)."""
    return perlin_noise(shape, rng, scale_exponents, rotation) > threshold
