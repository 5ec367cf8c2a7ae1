"""DeSTSeg's anomaly synthesis (Zhang et al., CVPR 2023), as in apple/ml-destseg's `data/data_utils.py`.

DRAEM's recipe without its texture augmentation: a Perlin mask (scale 2**k per axis, k in 0..5, rotated
+-90 degrees, threshold 0.5) and a random DTD image resized to the image; inside the mask
out = beta * image + (1 - beta) * texture with beta = 0.8 * U(0, 1). Pixels outside the mask are the
normal image's. DeSTSeg's per-category rotation of the normal image (`train.py`) is a training
augmentation applied to normal and anomalous images alike, not part of the synthesis, and is left out.

Preset `asbench` (ASBench's destseg fork): Perlin scale 2**k with k in 0..3 (`max_perlin_scale=4`) and
ASBench's +-90 degree pre-rotation with p = 0.3.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from acbench_methods.classic.common import EnvPath, PerlinFamily, TextureFolder, blend_in_mask, texture_folder
from pydantic import BaseModel, ConfigDict, model_validator

from acbench.data.category import CategoryData
from acbench.masks.perlin import perlin_mask

SCALE_EXPONENTS = {"official": (0, 6), "asbench": (0, 4)}  # randint upper bounds are exclusive
BETA_MAX = 0.8  # beta = 0.8 * U(0, 1): the image's share inside the mask
DTD_HINT = "download DTD from https://www.robots.ox.ac.uk/~vgg/data/dtd/ and point it at dtd/images"


class DeSTSegOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["official", "asbench"] = "official"
    texture_path: EnvPath = None

    @model_validator(mode="after")
    def _needs_textures(self) -> DeSTSegOptions:
        if self.texture_path is None:
            raise ValueError(f"destseg needs texture_path, the DTD images folder ({DTD_HINT})")
        return self


class DeSTSeg(PerlinFamily):
    Options = DeSTSegOptions
    description = "DeSTSeg (Zhang et al., CVPR 2023): Perlin mask blending a DTD texture, beta = 0.8 U(0,1)"

    def folders(self) -> list[TextureFolder]:
        if not hasattr(self, "_textures"):
            self._textures = texture_folder(self.options.texture_path, "method destseg: options.texture_path",
                                            DTD_HINT)
        return [self._textures]

    def synthesise(self, image: np.ndarray, data: CategoryData, rng: np.random.Generator,
                   file: str = "") -> tuple[np.ndarray, np.ndarray]:
        texture = self.folders()[0].sample(rng, image.shape[:2])
        mask = perlin_mask(image.shape[:2], rng, SCALE_EXPONENTS[self.options.preset])
        beta = BETA_MAX * float(rng.uniform())
        return blend_in_mask(image, texture, mask, 1.0 - beta), mask
