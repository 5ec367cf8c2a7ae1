"""Pieces shared by the training-free classic methods."""

from __future__ import annotations

import numpy as np
import torch

from acbench.data.category import CategoryData


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
