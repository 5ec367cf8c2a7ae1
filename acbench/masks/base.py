"""The mask-source interface and the options every source shares (where the product is)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from acbench.data.category import CategoryData
from acbench.masks.foreground import TEXTURE_CATEGORIES, ForegroundMethod, estimate_foreground


#: Fallbacks taken in this process since the last `reset_fallbacks()`, by kind: `fallback_mask` (a
#: source found no valid placement and drew a small disk), `whole_image_foreground` (a foreground
#: estimate was not trusted and the whole image was used). The engine resets it before each job and
#: records it in that job's rows (like the GPU peak-memory counter), whatever method drew the masks.
FALLBACKS: Counter[str] = Counter()


def note_fallback(kind: str) -> None:
    FALLBACKS[kind] += 1


def reset_fallbacks() -> None:
    FALLBACKS.clear()


def fallback_counts() -> dict[str, int]:
    return dict(FALLBACKS)


class ForegroundOptions(BaseModel):
    """How a source finds the product in the normal image, so masks stay on it.

    `auto` uses the whole image for texture categories (`texture_categories`) and the border-colour
    difference otherwise; `foreground_overrides` sets the method per category (e.g. `{screw: dark}`).
    """

    model_config = ConfigDict(extra="forbid")
    foreground: ForegroundMethod = "auto"
    foreground_overrides: dict[str, ForegroundMethod] = Field(default_factory=dict)
    texture_categories: list[str] = Field(default_factory=lambda: sorted(TEXTURE_CATEGORIES))

    def method_for(self, category: str) -> ForegroundMethod:
        method = self.foreground_overrides.get(category, self.foreground)
        if method == "auto":
            return "whole" if category in self.texture_categories else "border"
        return method

    def foreground_of(self, category: str, normal: np.ndarray) -> np.ndarray:
        return estimate_foreground(normal, self.method_for(category))


class MaskSource(ABC):
    """A seeded generator of target masks. Subclasses set `Options` and implement `sample`."""

    Options: ClassVar[type[BaseModel]] = ForegroundOptions
    description: ClassVar[str] = ""

    def __init__(self, options: BaseModel | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def sample(self, data: CategoryData, anomaly_type: str, normal: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
        """A non-empty bool HxW mask for `anomaly_type`, the size of `normal` (uint8 HxWx3)."""

    def provenance(self) -> dict[str, Any]:
        """What the manifest records about this source."""
        return {"options": self.options.model_dump(mode="json")}
