"""Reference anomalies with captions, and target masks (through `acbench.masks`).

Captions are read in the format of the official preparation scripts (MVTec-Caption,
`prepare_data_mvtec/01_*.py` and `02_*.py` of the released code): one text file per test image,
`<category>/prompt/<defect>/<image stem>.txt`, beside `<category>/test/` in the dataset root. The
`captions` option accepts:

- `dataset`: those `prompt/` folders inside the dataset root itself (where the official script puts them);
- a folder in the same layout (a separate copy of MVTec-Caption's `prompt/` folders);
- the official `ano_data_train.json` / `ano_data_test.json` (a list of {"image_file", "text", ...});
- a JSON object {"<category>/test/<defect>/<file>": "caption", ...}.

An image without a caption falls back to the template ("The {category} has {defect}"); every fallback is
counted, and the method's provenance marks such runs "template captions — not the paper's".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import transforms

from acbench.data.category import CategoryData, DefectExample
from acbench.errors import UserError
from acbench.masks import MaskSourceSpec
from acbench_methods.anomalycontrol.cache import Reference
from acbench_methods.anomalycontrol.options import RELEASED_MASKS_ENV, AnomalyControlOptions

TEMPLATE_MARK = "template captions — not the paper's"


def _relative(example: DefectExample, data: CategoryData) -> str:
    path = example.image_path
    return path.relative_to(data.root).as_posix() if path.is_relative_to(data.root) else path.as_posix()


def prompt_file(folder: Path, relative_image: str) -> Path:
    """MVTec-Caption's text file of an image: `<cat>/test/<defect>/<stem>.png` -> `<cat>/prompt/<defect>/<stem>.txt`."""
    parts = Path(relative_image).parts
    if len(parts) >= 4 and parts[-3] == "test":
        return folder.joinpath(*parts[:-3], "prompt", parts[-2], Path(parts[-1]).stem + ".txt")
    return folder / Path(relative_image).with_suffix(".txt")


@dataclass
class Captions:
    """Per-image captions from one source, with counts of what was found and what fell back."""

    table: dict[str, str] = field(default_factory=dict)  # relative image path -> caption
    folder: Path | None = None  # MVTec-Caption layout (None: only the table)
    use_dataset_root: bool = False
    source: str = "template"
    found: set[str] = field(default_factory=set)  # images with their own caption
    fallback: set[str] = field(default_factory=set)  # images that got the template

    @classmethod
    def load(cls, spec: str | Path | None) -> Captions:
        if spec is None:
            return cls()
        if str(spec) == "dataset":
            return cls(use_dataset_root=True, source="MVTec-Caption (dataset root)")
        path = Path(spec).expanduser()
        if path.is_dir():
            return cls(folder=path, source=f"MVTec-Caption ({path})")
        if not path.is_file():
            raise UserError(f"captions: {path} not found; give a MVTec-Caption folder, a captions JSON or 'dataset'")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected the official "
                'ano_data_train.json list or {"<category>/test/<defect>/<file>": "caption", ...}'
            ) from None
        if isinstance(raw, list) and all(isinstance(r, dict) and {"image_file", "text"} <= set(r) for r in raw):
            table = {str(r["image_file"]): str(r["text"]) for r in raw}
        elif isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values()):
            table = raw
        else:
            raise UserError(
                f"{path}: expected the official ano_data_*.json list of {{image_file, text}} entries "
                "or a JSON object mapping image paths to caption strings"
            )
        return cls({k.replace("\\", "/"): v for k, v in table.items()}, source=f"captions file ({path.name})")

    def lookup(self, example: DefectExample, data: CategoryData) -> str | None:
        relative = _relative(example, data)
        if relative in self.table:
            return self.table[relative]
        folder = data.root if self.use_dataset_root else self.folder
        if folder is not None:
            text_file = prompt_file(folder, relative)
            if text_file.is_file():
                return text_file.read_text().strip()
        return None

    def caption(self, example: DefectExample, data: CategoryData, template: str) -> str:
        text = self.lookup(example, data)
        if text is not None:
            self.found.add(str(example.image_path))
            return text
        self.fallback.add(str(example.image_path))
        return template.format(category=data.category.replace("_", " "), defect=data.text(example.anomaly_type))

    def provenance(self) -> dict[str, object]:
        """What the report says about the captions: the paper's per-image captions or the template."""
        if self.fallback or not self.found:
            return {"captions": TEMPLATE_MARK, "captions_source": self.source,
                    "n_template_captions": len(self.fallback), "n_captions": len(self.found)}
        return {"captions": self.source, "n_captions": len(self.found)}


def load_captions(spec: str | Path | None) -> Captions:
    return Captions.load(spec)


def caption_of(example: DefectExample, data: CategoryData, captions: Captions, template: str) -> str:
    return captions.caption(example, data, template)


def reference_entry(
    example: DefectExample, data: CategoryData, captions: Captions, template: str
) -> dict[str, str]:
    """A reference as plain data (paths and caption), e.g. for the fit artifact's reference table."""
    return {
        "category": data.category,
        "anomaly_type": example.anomaly_type,
        "image": str(example.image_path),
        "mask": str(example.mask_path),
        "caption": caption_of(example, data, captions, template),
    }


def reference_of(
    example: DefectExample, data: CategoryData, captions: Captions, template: str, size: int, raw: bool = False
) -> Reference:
    """A reference at the diffusion resolution; `raw` also keeps the file-resolution view for CSM."""
    return Reference(
        example.image(size),
        example.mask(size),
        caption_of(example, data, captions, template),
        example.image() if raw else None,
        example.mask() if raw else None,
    )


#: The masked training image is blanked where the training mask is at least this, per `train_resize`.
#: The released dataset tests its normalised soft mask (2m - 1) against 0.5, i.e. m >= 0.75; a binary mask
#: (the `bicubic` view) is blanked where set, as the diffusers inpainting pipeline does (m >= 0.5).
PAINT_THRESHOLD = {"bilinear-crop": 0.75, "bicubic": 0.5}


def training_view(
    example: DefectExample, reference: Reference, size: int, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """The image (uint8 H x W x 3) and mask (bool, or float in [0, 1]) the adapter trains on, size x size.

    `bicubic`: the reference's own view (bicubic image and nearest binary mask, stretched to a square).
    `bilinear-crop`: the released training transform, applied alike to image and mask: the shorter side
    resized to `size` (torchvision on PIL images, so PIL's antialiased bilinear, as released), then the
    centre crop. The mask stays soft (k / 255). Its file is binarised first (>= 128, as everywhere in
    acbench) so JPEG noise does not leak in; on 0/255 masks such as MVTec's this is the released input.
    """
    if mode == "bicubic":
        return reference.image, reference.mask
    resize = transforms.Compose(
        [transforms.Resize(size, transforms.InterpolationMode.BILINEAR), transforms.CenterCrop(size)]
    )
    raw_image = reference.raw_image if reference.raw_image is not None else example.image()
    raw_mask = reference.raw_mask if reference.raw_mask is not None else example.mask()
    image = resize(Image.fromarray(raw_image))
    mask = resize(Image.fromarray(raw_mask.astype(np.uint8) * 255))
    return np.array(image, dtype=np.uint8), np.asarray(mask, dtype=np.float32) / 255


def target_mask_spec(options: AnomalyControlOptions) -> MaskSourceSpec:
    """The mask source: the one given, else the preset's (official: AnomalyDiffusion's released masks)."""
    if options.mask_source is not None:
        return options.mask_source
    if options.target_masks == "anomalydiffusion":
        folder = os.environ.get(RELEASED_MASKS_ENV)
        if not folder:
            raise UserError(
                f"anomalycontrol preset official: target masks are AnomalyDiffusion's generated masks; export "
                f"{RELEASED_MASKS_ENV}=<folder with <category>/<type>/*.jpg>, or set mask_source "
                "(or preset: acbench)"
            )
        return MaskSourceSpec(name="folder", options={"path": folder})
    return MaskSourceSpec(name=options.target_masks)


class TargetMasks:
    """Target masks from the protocol's mask source (`acbench.masks`)."""

    def __init__(self, spec: MaskSourceSpec) -> None:
        self.source = spec.build()

    def sample(
        self, data: CategoryData, anomaly_type: str, normal: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return np.asarray(self.source.sample(data, anomaly_type, normal, rng), dtype=bool)
