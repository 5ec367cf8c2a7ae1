"""DRAEM-style Perlin anomalies (Zavrtanik et al., ICCV 2021), through anomalib's generator.

A thresholded, rotated Perlin-noise mask blends an augmented texture into the normal image:
out = img * (1 - m) + beta * texture * m + (1 - beta) * img * m. The texture source is another
normal image of the dataset (`dataset`, default: no download needed), a folder of textures such as
DTD (`folder`, with `texture_path`), or the Perlin noise itself (`noise`). Pixels outside the mask
are the normal image's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from acbench_methods.classic.common import pick_normal, to_tensor, to_uint8, torch_seed
from pydantic import BaseModel, ConfigDict, Field, model_validator

from acbench.data.io import IMAGE_SUFFIXES
from acbench.errors import UserError
from acbench.synthesis import GenerationRequest, Sample, Synthesizer


class PerlinOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texture_source: Literal["dataset", "folder", "noise"] = "dataset"
    texture_path: Path | None = Field(None, description="folder of texture images (e.g. DTD) for 'folder'")
    blend_factor: tuple[float, float] = (0.2, 1.0)

    @model_validator(mode="after")
    def _path_for_folder(self) -> PerlinOptions:
        if self.texture_source == "folder" and self.texture_path is None:
            raise ValueError("texture_source 'folder' needs texture_path (e.g. the DTD images folder)")
        return self


class PerlinDraem(Synthesizer):
    Options = PerlinOptions
    description = "DRAEM-style Perlin-noise masks blending a texture into the normal image"

    def _sources(self, data) -> list[Path]:
        opts = self.options
        if opts.texture_source == "noise":
            return []
        if opts.texture_source == "folder":
            folder = Path(opts.texture_path)
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(f"{folder}: no texture images found for the perlin method's texture_path")
            return files
        return list(data.normal_train)

    def generate(self, data, request: GenerationRequest) -> Iterator[Sample]:
        # Imported here: anomalib takes seconds to import, and every worker process imports this package.
        from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

        rng = request.rng()
        generator = PerlinAnomalyGenerator(probability=1.0, blend_factor=tuple(self.options.blend_factor))
        sources = self._sources(data)
        produced = 0
        while produced < request.count:
            image, source = pick_normal(data, rng)
            texture = str(sources[int(rng.integers(len(sources)))]) if sources else None
            with torch.random.fork_rng():
                torch.manual_seed(torch_seed(rng))
                img = to_tensor(image)
                # The device is explicit: anomalib otherwise picks CUDA when the machine has it while `img`
                # stays on the CPU ("Expected all tensors to be on the same device").
                perturbation, mask = generator.generate_perturbation(img.shape[1], img.shape[2],
                                                                     torch.device("cpu"), texture)
                beta = torch.empty(1).uniform_(*self.options.blend_factor)
                m = mask.permute(2, 0, 1)
                out = img * (1 - m) + beta * perturbation.permute(2, 0, 1) + (1 - beta) * img * m
            if m.sum() == 0:  # a rare all-below-threshold noise: draw again, keep the count exact
                continue
            produced += 1
            yield Sample(to_uint8(out), m[0].numpy() > 0.5, request.anomaly_type, source)
