"""Pieces shared by the training-free classic methods."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from PIL import Image
from pydantic import BeforeValidator
from torchvision.transforms.v2 import functional as TF

from acbench.data.category import CategoryData
from acbench.data.io import IMAGE_SUFFIXES, is_image
from acbench.errors import UserError, require_folder
from acbench.synthesis import GenerationRequest, Sample, Synthesizer


def pick_normal(data: CategoryData, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random normal training image and its path relative to the dataset root."""
    path = data.normal_train[int(rng.integers(len(data.normal_train)))]
    return data.normal_image(data.normal_train.index(path)), path.relative_to(data.root).as_posix()


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float CxHxW in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float CxHxW in [0, 1] -> uint8 HxWx3 (rounded, so an untouched pixel keeps its value)."""
    return (tensor.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def torch_seed(rng: np.random.Generator) -> int:
    """A torch seed drawn from the job's numpy generator (torchvision transforms use torch's RNG)."""
    return int(rng.integers(2**31 - 1))


# --------------------------------------------------------------------------------------------- #
# Texture folders (DTD, RealNet's SDAS images, …)


class TextureFolder:
    """The image files of a texture folder (searched recursively), loaded as RGB uint8 at a given size.

    `option` names the setting as the user wrote it ("method memseg: options.texture_path"), so every
    problem is reported as one line naming it; `hint` says where to get the folder.
    """

    def __init__(self, path: str | Path, option: str, hint: str = "") -> None:
        self.path, self.option, self.hint = Path(path).expanduser(), option, hint
        self._files: list[Path] | None = None

    @property
    def files(self) -> list[Path]:
        if self._files is None:
            self.check_exists()
            self._files = sorted(p for p in self.path.rglob("*") if is_image(p))
        return self._files

    def check_exists(self) -> None:
        require_folder(self.path, self.option, self.hint, suffixes=IMAGE_SUFFIXES)

    def check(self) -> None:
        """Before any job: the folder exists, holds images, and every image header can be read."""
        for f in self.files:
            try:
                with Image.open(f) as im:
                    im.size  # noqa: B018 - reading the header is the check
            except (OSError, SyntaxError, ValueError) as exc:
                raise UserError(f"{self.option}: {f} is not a readable image ({exc.__class__.__name__}); "
                                f"remove it from {self.path} or replace it") from None

    def load(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """File `index` as RGB uint8 resized to `size` = (height, width) (bilinear, as cv2.resize in the papers)."""
        with Image.open(self.files[index]) as im:
            return np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))

    def sample(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        return self.load(int(rng.integers(len(self.files))), size)


# --------------------------------------------------------------------------------------------- #
# ASBench's cross-cutting wrapper and DRAEM's random augmenter


def asbench_pre_rotate(image: np.ndarray, rng: np.random.Generator, p: float = 0.3,
                       degrees: float = 90.0) -> np.ndarray:
    """ASBench's dataset wrapper: with probability `p` the normal image is rotated by U(-degrees, degrees)
    before synthesis (bilinear, black corners), and the rotated image is the pair's normal image.

    Both draws are always made, so the random stream does not depend on the outcome.
    """
    rotate = rng.random() < p
    angle = float(rng.uniform(-degrees, degrees))
    if not rotate:
        return image
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return TF.rotate(t, angle, interpolation=TF.InterpolationMode.BILINEAR, fill=0).permute(1, 2, 0).numpy()


def _gamma(t, rng):
    gammas = torch.tensor(rng.uniform(0.5, 2.0, size=3), dtype=torch.float32).view(3, 1, 1)
    return ((t.float() / 255) ** gammas * 255).round().clamp(0, 255).to(torch.uint8)


def _brightness(t, rng):
    mul, add = rng.uniform(0.8, 1.2), rng.uniform(-30, 30)
    return (t.float() * mul + add).round().clamp(0, 255).to(torch.uint8)


def _hue_saturation(t, rng):
    return TF.adjust_saturation(TF.adjust_hue(t, float(rng.uniform(-50, 50)) / 360), float(rng.uniform(0.5, 1.5)))


#: DRAEM's `randAugmenter` ops (imgaug in the official code, which is unmaintained and breaks on NumPy 2),
#: re-expressed with torchvision; approximate by design: imgaug's exact parameter draws are not reproduced.
AUGMENT_OPS = {
    "gamma_contrast": _gamma,
    "multiply_add_brightness": _brightness,
    "sharpness": lambda t, rng: TF.adjust_sharpness(t, float(rng.uniform(0.0, 2.0))),
    "hue_saturation": _hue_saturation,
    "solarize": lambda t, rng: TF.solarize(t, float(rng.uniform(32, 128))),
    "posterize": lambda t, rng: TF.posterize(t, int(rng.integers(4, 9))),
    "invert": lambda t, rng: TF.invert(t),
    "autocontrast": lambda t, rng: TF.autocontrast(t),
    "equalize": lambda t, rng: TF.equalize(t),
    "rotate_45": lambda t, rng: TF.rotate(t, float(rng.uniform(-45, 45)), fill=0),
}


def rand_augment(image: np.ndarray, rng: np.random.Generator, n: int = 3) -> np.ndarray:
    """DRAEM's random augmenter: `n` distinct ops drawn from `AUGMENT_OPS`, applied in the drawn order."""
    names = list(AUGMENT_OPS)
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    for i in rng.choice(len(names), size=n, replace=False):
        t = AUGMENT_OPS[names[int(i)]](t, rng)
    return t.permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------------------------- #
# The Perlin family (MemSeg, DeSTSeg, GLASS, RealNet): one driver, one blend law, one threshold foreground.
# The methods differ only in the scale range, how masks are combined, the foreground rule, the blend
# factor's distribution and the texture source; each plugin supplies those in `synthesise`.


def _expand_env_path(value: object) -> object:
    from acbench.protocol import expand_env

    return expand_env(value) if isinstance(value, str) else value


#: A folder option of the Perlin family: `${VAR}` is replaced by the environment variable (as in
#: `dataset.root`), so a shipped protocol can say `texture_path: ${DTD_ROOT}/images`.
EnvPath = Annotated[Path | None, BeforeValidator(_expand_env_path)]


def texture_folder(path: str | Path, option: str, hint: str = "") -> TextureFolder:
    """A `TextureFolder`; the value `demo:textures` names the demo's stand-in folder (see `acbench.data.demo`)."""
    from acbench.data.demo import DEMO_TEXTURES, materialise_demo_textures

    if str(path) == DEMO_TEXTURES:
        path = materialise_demo_textures()
    return TextureFolder(path, option, hint)


def blend_in_mask(image: np.ndarray, source: np.ndarray, mask: np.ndarray, opacity: float) -> np.ndarray:
    """The Perlin family's blend: `opacity * source + (1 - opacity) * image` inside `mask`, the image elsewhere.

    DRAEM, DeSTSeg and GLASS write it with beta = 1 - opacity (the image's share); MemSeg and RealNet with
    the source's share ("transparency"). Computed in float and rounded, so pixels outside the mask keep
    their exact value.
    """
    img = image.astype(np.float32)
    inside = opacity * source.astype(np.float32) + (1.0 - opacity) * img
    out = np.where(mask[..., None], inside, img)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def threshold_foreground(image: np.ndarray, threshold: float, reverse: bool, bgr: bool = False) -> np.ndarray:
    """MemSeg's foreground: grey level (OpenCV's RGB2GRAY weights) above `threshold` is the background,
    or the foreground when `reverse`. `bgr=True` reproduces ASBench, which applies those weights to a BGR
    image (red and blue swapped)."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(image[..., ::-1] if bgr else image), cv2.COLOR_RGB2GRAY)
    _, above = cv2.threshold(grey, threshold, 255, cv2.THRESH_BINARY)
    above = above > 0
    return above if reverse else ~above


class PerlinFamily(Synthesizer):
    """Driver shared by the Perlin-family plugins: pick a normal image (ASBench's pre-rotation under the
    `asbench` preset), let the plugin synthesise, and draw again when the mask came out empty.

    The official codes keep an empty-mask draw as an "anomaly" that changed nothing; acbench keeps only
    pairs with a defect, so the count per type is exact. Subclasses implement `synthesise` and list the
    folders their options name in `folders` (checked before any job).
    """

    MAX_EMPTY_DRAWS = 200

    def folders(self) -> list[TextureFolder]:
        return []

    def check(self) -> None:
        for folder in self.folders():
            folder.check()

    def synthesise(self, image: np.ndarray, data: CategoryData, rng: np.random.Generator,
                   file: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(uint8 HxWx3 image, bool HxW mask) for one normal image (`file`: its path under the dataset root)."""
        raise NotImplementedError

    def generate(self, data: CategoryData, request: GenerationRequest) -> Iterator[Sample]:
        rng = request.rng()
        produced = empty = 0
        while produced < request.count:
            image, source = pick_normal(data, rng)
            if getattr(self.options, "preset", "official") == "asbench":
                image = asbench_pre_rotate(image, rng)
            out, mask = self.synthesise(image, data, rng, source)
            if not mask.any():
                empty += 1
                if empty >= self.MAX_EMPTY_DRAWS:
                    raise UserError(f"{type(self).__name__.lower()}: {empty} masks in a row were empty on category "
                                    f"'{data.category}': its foreground setting leaves no pixel; check the options")
                continue
            empty = 0
            produced += 1
            yield Sample(out, mask, request.anomaly_type, source)
# Second images, patch boxes and the official codes' uint8 casts


def pick_other_normal(data: CategoryData, rng: np.random.Generator, source: str) -> np.ndarray:
    """A random normal training image other than `source` (a path as `pick_normal` returns it), for
    methods that take their patch from a second image (FPI, NSA). With a single normal image it is
    that image again."""
    others = [p for p in data.normal_train if p.relative_to(data.root).as_posix() != source] or data.normal_train
    path = others[int(rng.integers(len(others)))]
    return data.normal_image(data.normal_train.index(path))


def uint8_wrap(values: np.ndarray) -> np.ndarray:
    """`np.uint8(x)` of a float array as the official codes do it on x86: truncate towards zero, then
    wrap modulo 256 (a value of 300 becomes 44, -10 becomes 246). Written out because NumPy leaves
    out-of-range float casts undefined."""
    return np.mod(np.trunc(values).astype(np.int64), 256).astype(np.uint8)


def box_mask(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """A bool mask of `shape` that is True on rows y0:y1 and columns x0:x1."""
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask
