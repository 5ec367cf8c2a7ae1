"""GLASS's local anomaly synthesis (Chen et al., ECCV 2024), image level, as in cqylunlun/GLASS.

`datasets/mvtec.py::__getitem__` and `perlin.py::perlin_mask`: a random DTD image, augmented by three
distinct ops of GLASS's torchvision list; two thresholded Perlin noises (scale 2**k per axis, k in 0..5,
rotated +-90 degrees, threshold 0.5) combined as union, intersection or the first alone (1/3 each),
times the foreground mask, drawn again until the mask is non-empty; inside the mask
out = beta * image + (1 - beta) * texture with beta ~ N(0.5, 0.1) clipped to [0.2, 0.8]. Pixels outside
the mask are the normal image's. GLASS's global (feature-space) synthesis makes no image pair and is
out of scope.

Foreground: GLASS reads released masks `fg_mask/<category>/<file>` (`--fg 1`); give that folder as
`foreground_path`. Without it, acbench's estimate is used (`foreground`: `auto` = the whole image for
textures, the border-colour estimate for objects), a documented deviation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from acbench_methods.classic.common import EnvPath, PerlinFamily, TextureFolder, blend_in_mask, texture_folder
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torchvision.transforms.v2 import functional as TF

from acbench.data.category import CategoryData
from acbench.errors import UserError
from acbench.masks.foreground import TEXTURE_CATEGORIES, estimate_foreground
from acbench.masks.perlin import perlin_mask

SCALE_EXPONENTS = (0, 6)  # perlin_mask(..., min=0, max=6), np.random.randint: 2**0 .. 2**5
BETA = (0.5, 0.1, 0.2, 0.8)  # run-mvtec.sh --mean 0.5 --std 0.1; np.clip(beta, .2, .8)
MAX_MASK_DRAWS = 100
DTD_HINT = "download DTD from https://www.robots.ox.ac.uk/~vgg/data/dtd/ and point it at dtd/images"


def _jitter(kind: str):
    def op(t: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if kind == "colour":
            t = TF.adjust_saturation(t, float(rng.uniform(0.8, 1.2)))
            return TF.adjust_hue(t, float(rng.uniform(-0.2, 0.2)))
        factor = float(rng.uniform(0.8, 1.2))
        return TF.adjust_contrast(t, factor) if kind == "contrast" else TF.adjust_brightness(t, factor)
    return op


#: GLASS's `rand_augmenter` list (torchvision in the official code too), with the parameters drawn from
#: the job's generator; three distinct ops are applied in the drawn order.
GLASS_AUGMENT_OPS = {
    "contrast": _jitter("contrast"),
    "brightness": _jitter("brightness"),
    "saturation_hue": _jitter("colour"),
    "hflip": lambda t, rng: TF.horizontal_flip(t),
    "vflip": lambda t, rng: TF.vertical_flip(t),
    "grayscale": lambda t, rng: TF.rgb_to_grayscale(t, num_output_channels=3),
    "autocontrast": lambda t, rng: TF.autocontrast(t),
    "equalize": lambda t, rng: TF.equalize(t),
    "rotate_45": lambda t, rng: TF.rotate(t, float(rng.uniform(-45, 45))),
}


def glass_augment(image: np.ndarray, rng: np.random.Generator, n: int = 3) -> np.ndarray:
    names = list(GLASS_AUGMENT_OPS)
    t = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    for i in rng.choice(len(names), size=n, replace=False):
        t = GLASS_AUGMENT_OPS[names[int(i)]](t, rng)
    return t.permute(1, 2, 0).numpy()


def dual_perlin_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """GLASS's combination of two Perlin masks: union, intersection or the first one, 1/3 each."""
    first = perlin_mask(shape, rng, SCALE_EXPONENTS)
    second = perlin_mask(shape, rng, SCALE_EXPONENTS)
    u = rng.uniform()
    if u > 2 / 3:
        return first | second
    if u > 1 / 3:
        return first & second
    return first


class GlassOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texture_path: EnvPath = None
    foreground_path: EnvPath = Field(None, description="GLASS's released fg_mask folder: <path>/<category>/<file>")
    foreground: Literal["auto", "whole", "border", "bright", "dark"] = "auto"
    rand_aug: bool = True

    @model_validator(mode="after")
    def _needs_textures(self) -> GlassOptions:
        if self.texture_path is None:
            raise ValueError(f"glass needs texture_path, the DTD images folder ({DTD_HINT})")
        return self


class Glass(PerlinFamily):
    Options = GlassOptions
    description = "GLASS (Chen et al., ECCV 2024) local synthesis: dual Perlin x foreground, DTD, beta ~ N(0.5, 0.1)"

    def folders(self) -> list[TextureFolder]:
        if not hasattr(self, "_textures"):
            self._textures = texture_folder(self.options.texture_path, "method glass: options.texture_path",
                                            DTD_HINT)
        return [self._textures]

    def check(self) -> None:
        super().check()
        if self.options.foreground_path is not None:
            from acbench.errors import require_folder

            require_folder(self.options.foreground_path, "method glass: options.foreground_path",
                           "GLASS's foreground masks are linked from https://github.com/cqylunlun/GLASS")

    def foreground_mask(self, image: np.ndarray, data: CategoryData, file: str) -> np.ndarray:
        opts = self.options
        if opts.foreground_path is not None:
            path = Path(opts.foreground_path) / data.category / Path(file).name
            if not path.is_file():
                raise UserError(f"method glass: options.foreground_path: {path} not found (expected "
                                "<foreground_path>/<category>/<normal image file name>)")
            with Image.open(path) as im:  # ceil of a [0, 1] mask: any non-zero pixel is foreground
                return np.asarray(im.convert("L").resize(image.shape[1::-1], Image.BILINEAR)) > 0
        method = opts.foreground
        if method == "auto":
            method = "whole" if data.category in TEXTURE_CATEGORIES else "border"
        return estimate_foreground(image, method)

    def synthesise(self, image: np.ndarray, data: CategoryData, rng: np.random.Generator,
                   file: str = "") -> tuple[np.ndarray, np.ndarray]:
        texture = self.folders()[0].sample(rng, image.shape[:2])
        if self.options.rand_aug:
            texture = glass_augment(texture, rng)
        foreground = self.foreground_mask(image, data, file)
        for _ in range(MAX_MASK_DRAWS):  # GLASS redraws until the (feature-level) mask is non-empty
            mask = dual_perlin_mask(image.shape[:2], rng) & foreground
            if mask.any():
                break
        mean, std, low, high = BETA
        beta = float(np.clip(rng.normal(mean, std), low, high))
        return blend_in_mask(image, texture, mask, 1.0 - beta), mask
