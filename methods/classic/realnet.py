"""RealNet's anomalies from its released SDAS images (Zhang, Xu, Zhou; CVPR 2024), as in cnulab/RealNet.

RealNet's Strength-controllable Diffusion Anomaly Synthesis (SDAS) samples anomaly images from a
diffusion model trained for two GPU-days; the authors release 10k of them per category. At training
time RealNet turns them into pairs (`datasets/realnet_dataset.py::generate_anomaly`): a DRAEM Perlin
mask (scale 2**k per axis, k in 0..5, rotated +-90 degrees, threshold 0.5) times the category's
foreground (RealNet's own rule per MVTec AD / VisA category: Otsu, inverted Otsu or triangle threshold
of the grey image, then a 6x6 closing and opening; the whole image for textures and categories it does
not list), and inside the mask out = f * sdas + (1 - f) * image with f ~ U(0.5, 1)
(`sdas_transparency_range` in `experiments/MVTec-AD/realnet.yaml`). The SDAS image is drawn from
`<sdas_path>/<category>/` when that folder exists, otherwise from `sdas_path` itself. Pixels outside the
mask are the normal image's.

Preset `asbench` (ASBench's `MemSegDataset_RealNet`): MemSeg's simulation with the SDAS folder as its
texture source (SDAS with p = 0.5, else the shuffled self-patch), delta ~ U(0.15, 1), one foreground
setting for all categories (threshold 100, not reversed), and ASBench's pre-rotation.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from acbench_methods.classic.common import EnvPath, PerlinFamily, TextureFolder, blend_in_mask, texture_folder
from acbench_methods.classic.memseg import ASBENCH_FOREGROUND, memseg_anomaly
from pydantic import BaseModel, ConfigDict, model_validator
from skimage import morphology

from acbench.data.category import CategoryData
from acbench.masks.perlin import perlin_mask

SCALE_EXPONENTS = (0, 6)  # realnet.yaml: min_perlin_scale 0, perlin_scale 6 (torch.randint: exclusive)
SDAS_TRANSPARENCY = (0.5, 1.0)  # realnet.yaml: sdas_transparency_range
SDAS_HINT = ("RealNet publishes 10k SDAS images per category (Google Drive links under 'Strength-controllable "
             "Diffusion Anomaly Synthesis' in https://github.com/cnulab/RealNet); unzip them and set sdas_path "
             "to the folder holding one sub-folder per category")

# generate_target_foreground_mask: (rule, closing side, opening side) per dataset and category
_MVTEC_RULES = {
    **{c: ("whole", 0, 0) for c in ("carpet", "leather", "tile", "wood", "cable", "transistor")},
    "pill": ("otsu", 6, 6),
    **{c: ("triangle", 6, 6) for c in ("hazelnut", "metal_nut", "toothbrush")},
    **{c: ("otsu_inverted", 6, 6) for c in ("bottle", "capsule", "grid", "screw", "zipper")},
}
_VISA_RULES = {"capsules": ("whole", 0, 0), **{f"pcb{i}": ("triangle_blue", 8, 3) for i in range(1, 5)}}
_VISA_DEFAULT = ("otsu", 3, 3)


def foreground_rule(dataset: str, category: str) -> tuple[str, int, int]:
    if dataset == "visa":
        return _VISA_RULES.get(category, _VISA_DEFAULT)
    return _MVTEC_RULES.get(category, ("whole", 0, 0)) if dataset == "mvtec" else ("whole", 0, 0)


def realnet_foreground(image: np.ndarray, rule: tuple[str, int, int]) -> np.ndarray:
    """RealNet's foreground: an OpenCV Otsu / triangle threshold, then a square closing and opening."""
    kind, close, open_ = rule
    if kind == "whole":
        return np.ones(image.shape[:2], bool)
    grey = np.ascontiguousarray(image[..., 2]) if kind == "triangle_blue" else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    flag = cv2.THRESH_TRIANGLE if kind.startswith("triangle") else cv2.THRESH_OTSU
    _, above = cv2.threshold(grey, 100, 255, cv2.THRESH_BINARY | flag)
    mask = (above > 0) ^ (kind == "otsu_inverted")
    mask = morphology.closing(mask, np.ones((close, close), bool))
    return morphology.opening(mask, np.ones((open_, open_), bool)).astype(bool)


class RealNetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["official", "asbench"] = "official"
    sdas_path: EnvPath = None

    @model_validator(mode="after")
    def _needs_sdas(self) -> RealNetOptions:
        if self.sdas_path is None:
            raise ValueError(f"realnet needs sdas_path: {SDAS_HINT}")
        return self


class RealNet(PerlinFamily):
    Options = RealNetOptions
    description = "RealNet (Zhang et al., CVPR 2024): Perlin x foreground blend of its released SDAS images"

    def folders(self) -> list[TextureFolder]:
        if not hasattr(self, "_sdas"):
            self._sdas = texture_folder(self.options.sdas_path, "method realnet: options.sdas_path", SDAS_HINT)
            self._per_category: dict[str, TextureFolder] = {}
        return [self._sdas]

    def sdas_for(self, category: str) -> TextureFolder:
        root = self.folders()[0]
        if category not in self._per_category:
            sub = root.path / category
            self._per_category[category] = TextureFolder(sub, root.option, SDAS_HINT) if sub.is_dir() else root
        return self._per_category[category]

    def synthesise(self, image: np.ndarray, data: CategoryData, rng: np.random.Generator,
                   file: str = "") -> tuple[np.ndarray, np.ndarray]:
        sdas = self.sdas_for(data.category)
        if self.options.preset == "asbench":
            return memseg_anomaly(image, rng, ASBENCH_FOREGROUND, sdas)
        foreground = realnet_foreground(image, foreground_rule(data.dataset, data.category))
        mask = perlin_mask(image.shape[:2], rng, SCALE_EXPONENTS) & foreground
        source = sdas.sample(rng, image.shape[:2])
        factor = float(rng.uniform(*SDAS_TRANSPARENCY))
        return blend_in_mask(image, source, mask, factor), mask
