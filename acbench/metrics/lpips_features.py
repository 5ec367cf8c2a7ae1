"""LPIPS v0.1 split into per-image features and pair distances computed from them.

`lpips.LPIPS(x, y)` = sum over layers l of mean_hw sum_c w_lc (x̂_lchw - ŷ_lchw)^2, where x̂ are the
trunk features (after LPIPS's ScalingLayer) normalised to unit length over channels and w_l the
v0.1 `lin` 1x1 weights (non-negative). Scaling x̂ by sqrt(w_lc / (H_l W_l)) and flattening all
layers into one vector u(x) makes LPIPS a squared Euclidean distance, ||u(x) - u(y)||^2, so every
pair distance of a set follows from one backbone pass per image and a Gram matrix
(|u_i|^2 + |u_j|^2 - 2 <u_i, u_j>). The `lpips` package offers only the pairwise forward; this
module is the hand-written part. Features stay float32 (the package's own precision) and the Gram
products accumulate in float64, in column chunks with a bounded memory footprint (cancellation in
|u_i|^2 + |u_j|^2 - 2<u_i, u_j> would cost float32 about 1e-6).
"""

from __future__ import annotations

import warnings
from functools import cache

import lpips
import torch
from torch import Tensor

from acbench.weights import Policy, Resolution, resolve_lpips_backbone

#: float64 elements per Gram chunk (rows x columns), 64 MB.
CHUNK_ELEMENTS = 2**23
RANDOM_TRUNK_SEED = 0


def build_lpips(net: str, resolution: Resolution) -> lpips.LPIPS:
    """LPIPS v0.1 with the shipped heads and the trunk from `resolution` (random when it says so)."""
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", UserWarning)  # lpips passes torchvision the deprecated `pretrained=`
        torch.manual_seed(RANDOM_TRUNK_SEED)  # a random trunk is the same in every run and process
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
    if not resolution.is_random:
        _load_torchvision_trunk(model, resolution.path)
    return model.eval().requires_grad_(False)


def _load_torchvision_trunk(model: lpips.LPIPS, path: str | None) -> None:
    """Load a torchvision ImageNet state dict into lpips' sliced trunk (slices keep torchvision's indices)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    slice_of = {index: sname for sname, sl in model.net.named_children() for index, _ in sl.named_children()}
    target = {}
    for key, value in state.items():
        if key.startswith("features."):
            index, rest = key[len("features."):].split(".", 1)
            if index in slice_of:
                target[f"{slice_of[index]}.{index}.{rest}"] = value
    model.net.load_state_dict(target, strict=True)


def cached_lpips(net: str, policy: Policy, device: str) -> tuple[lpips.LPIPS, Resolution]:
    """The LPIPS network the policy resolves to; built once per (trunk file, device) and process."""
    resolution = resolve_lpips_backbone(net, policy)
    return _built(net, resolution, device), resolution


@cache
def _built(net: str, resolution: Resolution, device: str) -> lpips.LPIPS:
    return build_lpips(net, resolution).to(device)


class LpipsFeatures:
    """Per-image LPIPS feature vectors u(x) and distances between them (see the module docstring)."""

    def __init__(self, model: lpips.LPIPS) -> None:
        self.model = model
        self.heads = [lin.model[-1].weight.detach().flatten().double() for lin in model.lins]
        if any(bool((w < 0).any()) for w in self.heads):
            raise ValueError("LPIPS heads with negative weights have no Euclidean form")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """(N, D) float32 vectors u(x), flattened over layers; images in [-1, 1]."""
        outs = self.model.net(self.model.scaling_layer(images.to(self.device, torch.float32)))
        feats = [lpips.normalize_tensor(out) for out in outs]  # the package's own arithmetic
        scales = [(w / (f.shape[2] * f.shape[3])).sqrt().float() for w, f in zip(self.heads, feats, strict=True)]
        return torch.cat([(f * s.to(f.device)[None, :, None, None]).flatten(1)
                          for f, s in zip(feats, scales, strict=True)], dim=1)

    @torch.no_grad()
    def distances(self, a: Tensor, b: Tensor | None = None) -> Tensor:
        """(len(a), len(b)) float64 LPIPS distances ||u_a - u_b||^2 between rows of `a` and of `b` (or `a`)."""
        rows = a if b is None else torch.cat([a, b.to(a.device)])
        gram = torch.zeros(len(rows), len(rows), dtype=torch.float64, device=a.device)
        for start, stop in _chunks(rows.shape[1], len(rows)):
            chunk = rows[:, start:stop].double()
            gram += chunk @ chunk.T  # one product yields the squared norms (diagonal) and the cross terms
        norms = gram.diagonal()
        cols = slice(0, len(a)) if b is None else slice(len(a), len(rows))
        return norms[: len(a), None] + norms[None, cols] - 2 * gram[: len(a), cols]


def _chunks(columns: int, rows: int):
    step = max(1, CHUNK_ELEMENTS // max(rows, 1))
    for start in range(0, columns, step):
        yield start, min(columns, start + step)
