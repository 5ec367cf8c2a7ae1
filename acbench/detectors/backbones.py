"""ImageNet backbones of the detectors, resolved through `acbench.weights` (never downloaded at run time).

Files are torchvision's own checkpoints under their exact names, looked up in
`$TORCH_HOME/hub/checkpoints/` (or an explicit path). PatchCore and SuperSimpleNet use the V1
Wide-ResNet-50-2 weights of their papers (timm's `wide_resnet50_2.tv_in1k`), not torchvision's
newer V2 default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from acbench.synthesis import WeightRequirement
from acbench.weights import Resolution, resolve_torch_hub_file


@dataclass(frozen=True)
class Backbone:
    name: str
    filename: str
    url: str  # where a user gets the file; acbench itself never downloads at run time

    def requirement(self) -> WeightRequirement:
        return WeightRequirement(self.name, f"torchvision ImageNet weights {self.filename}", filename=self.filename,
                                 url=self.url)


WIDE_RESNET50 = Backbone("wide_resnet50_2", "wide_resnet50_2-95faca4d.pth",
                         "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth")
RESNET34 = Backbone("resnet34", "resnet34-b627a593.pth", "https://download.pytorch.org/models/resnet34-b627a593.pth")


def load_backbone(backbone: Backbone, policy: str, explicit: str | Path | None = None
                  ) -> tuple[torch.nn.Module, Resolution]:
    """The torchvision network with ImageNet weights, or random ones when the policy allows (flagged)."""
    resolution = resolve_torch_hub_file(backbone.name, backbone.filename, url=None, policy=policy,  # type: ignore[arg-type]
                                        explicit=explicit)
    model = getattr(torchvision.models, backbone.name)(weights=None)
    if resolution.path is not None:
        state = torch.load(resolution.path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model, resolution


def weights_column(resolution: Resolution) -> str:
    return "random" if resolution.is_random else "pretrained"
