"""MemSeg's anomaly simulation (Yang et al., EAAI 2023), as in TooTouch/MemSeg's `data/dataset.py`.

MemSeg has no official code; TooTouch/MemSeg ("unofficial re-implementation", MIT) is the code everyone
runs, ASBench included. Per normal image: a foreground mask (grey level thresholded with the category's
setting from its `anomaly_mask.json`, or the whole image), a DRAEM Perlin mask (scale 2**k per axis,
k in 0..5, rotated +-90 degrees, threshold 0.5), mask = Perlin x foreground; the source is a DTD texture
(with probability 0.5 when `texture_path` is set) or the image itself after DRAEM's random augmenter,
cut into an 8x8 grid and shuffled; inside the mask out = delta * source + (1 - delta) * image with
delta ~ U(0.15, 1). Pixels outside the mask are the normal image's.

Preset `asbench` (ASBench's DRAEM fork): one foreground setting for every category (threshold 100, not
reversed, grey weights applied to a BGR image), the DTD texture channel-swapped against the image (it is
read as RGB into a BGR pipeline), and ASBench's +-90 degree pre-rotation with p = 0.3.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from acbench_methods.classic.common import (EnvPath, PerlinFamily, TextureFolder, blend_in_mask, rand_augment,
                                            texture_folder, threshold_foreground)
from pydantic import BaseModel, ConfigDict, Field

from acbench.data.category import CategoryData
from acbench.masks.perlin import perlin_mask

SCALE_EXPONENTS = (0, 6)  # configs.yaml: min_perlin_scale 0, perlin_scale 6 (randint's upper bound is exclusive)
TRANSPARENCY = (0.15, 1.0)  # configs.yaml: transparency_range
GRID = 8  # configs.yaml: structure_grid_size (the paper says 4x8; the code uses 8x8)
DTD_HINT = "download DTD from https://www.robots.ox.ac.uk/~vgg/data/dtd/ and point it at dtd/images"


class MemSegForeground(BaseModel):
    """One category's entry of MemSeg's `anomaly_mask.json`."""

    model_config = ConfigDict(extra="forbid")
    use_mask: bool
    bg_threshold: float = 100
    bg_reverse: bool = False


#: TooTouch/MemSeg `anomaly_mask.json` (MVTec AD). Categories not listed use the whole image.
ANOMALY_MASK = {
    "hazelnut": MemSegForeground(use_mask=True, bg_threshold=50, bg_reverse=True),
    "metal_nut": MemSegForeground(use_mask=True, bg_threshold=40, bg_reverse=True),
    "cable": MemSegForeground(use_mask=False, bg_threshold=150, bg_reverse=True),
    "capsule": MemSegForeground(use_mask=True, bg_threshold=120),
    "transistor": MemSegForeground(use_mask=True, bg_threshold=90),
    "bottle": MemSegForeground(use_mask=True, bg_threshold=250),
    "screw": MemSegForeground(use_mask=True, bg_threshold=110),
    "zipper": MemSegForeground(use_mask=True, bg_threshold=100),
    "pill": MemSegForeground(use_mask=True, bg_threshold=100, bg_reverse=True),
    "toothbrush": MemSegForeground(use_mask=True, bg_threshold=30, bg_reverse=True),
    **{c: MemSegForeground(use_mask=False) for c in ("carpet", "grid", "leather", "tile", "wood")},
}
#: ASBench's DRAEM fork: hard-coded in `MVTecDataset_MemSeg.__getitem__` for every category
ASBENCH_FOREGROUND = MemSegForeground(use_mask=True, bg_threshold=100, bg_reverse=False)
WHOLE = MemSegForeground(use_mask=False)


class MemSegOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["official", "asbench"] = "official"
    texture_path: EnvPath = Field(None, description="DTD images folder; without it every source is the "
                                                        "shuffled self-patch (as MemSeg without DTD)")
    foreground: dict[str, MemSegForeground] = Field(
        default_factory=dict, description="per-category settings over anomaly_mask.json (official preset)")


def shuffle_grid(image: np.ndarray, rng: np.random.Generator, grid: int = GRID) -> np.ndarray:
    """Cut the image into grid x grid tiles and put them back in a random order (MemSeg's structure source).

    When a side is not a multiple of `grid` (MemSeg asserts it is), the remainder strip stays in place.
    """
    h, w = image.shape[:2]
    th, tw = h // grid, w // grid
    core = image[: th * grid, : tw * grid]
    tiles = core.reshape(grid, th, grid, tw, -1).transpose(0, 2, 1, 3, 4).reshape(grid * grid, th, tw, -1)
    tiles = tiles[rng.permutation(grid * grid)]
    out = image.copy()
    out[: th * grid, : tw * grid] = tiles.reshape(grid, grid, th, tw, -1).transpose(0, 2, 1, 3, 4).reshape(
        th * grid, tw * grid, -1)
    return out


class MemSeg(PerlinFamily):
    Options = MemSegOptions
    description = "MemSeg (Yang et al., EAAI 2023): Perlin x foreground mask, DTD or shuffled self-patch source"

    def folders(self) -> list[TextureFolder]:
        if self.options.texture_path is None:
            return []
        if not hasattr(self, "_textures"):
            self._textures = texture_folder(self.options.texture_path, "method memseg: options.texture_path",
                                            DTD_HINT)
        return [self._textures]

    def foreground_setting(self, category: str) -> MemSegForeground:
        if self.options.preset == "asbench":
            return ASBENCH_FOREGROUND
        return self.options.foreground.get(category) or ANOMALY_MASK.get(category, WHOLE)

    def synthesise(self, image: np.ndarray, data: CategoryData, rng: np.random.Generator,
                   file: str = "") -> tuple[np.ndarray, np.ndarray]:
        asbench = self.options.preset == "asbench"
        textures = self.folders()
        return memseg_anomaly(image, rng, self.foreground_setting(data.category), textures[0] if textures else None,
                              asbench_colours=asbench)


def memseg_anomaly(image: np.ndarray, rng: np.random.Generator, fg: MemSegForeground,
                   textures: TextureFolder | None, asbench_colours: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`MemSegDataset.generate_anomaly`: foreground, Perlin mask, source (texture with p = 0.5 when a folder
    is given, else the shuffled self-patch), blend with delta ~ U(0.15, 1). `asbench_colours`: ASBench's BGR
    grey weights and channel-swapped texture."""
    mask = perlin_mask(image.shape[:2], rng, SCALE_EXPONENTS)
    if fg.use_mask:
        mask &= threshold_foreground(image, fg.bg_threshold, fg.bg_reverse, bgr=asbench_colours)
    if textures is not None and rng.uniform() < 0.5:
        source = textures.sample(rng, image.shape[:2])
        if asbench_colours:
            source = source[..., ::-1]
    else:
        source = shuffle_grid(rand_augment(image, rng), rng)
    delta = float(rng.uniform(*TRANSPARENCY))
    return blend_in_mask(image, source, mask, delta), mask
