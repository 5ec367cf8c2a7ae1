"""The literature's few-shot split of real anomalies (AnomalyDiffusion, AnomalyControl).

Per category and defect type, files in natural name order ('2.png' before '10.png'): the first
k = floor(n * fraction) go to synthesis (training and IC-LPIPS references), the remaining n - k to
evaluation, together with all normal test images. No image is on both sides. `order: random`
shuffles with `seed` first (the same seed gives the same split).

A type with fewer than 3 images (for one third; 1/fraction in general) gets k = 0: it has no
synthesis example, so methods do not generate it, while detectors are evaluated on all its images.
The study records it (`types_not_generated` in the rows, the report's caveats).

`legacy_overlap` reproduces the released AnomalyDiffusion code, which trains on indices 0..k
*inclusive* while testing from k: image k is on both sides. Only for exact comparison with
published numbers; reports say so.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import TypeVar

T = TypeVar("T")


def exact_fraction(fraction: float) -> Fraction:
    """0.333 means one third: snap a float to the simple fraction it abbreviates (within 5e-4)."""
    snapped = Fraction(fraction).limit_denominator(20)
    return snapped if abs(float(snapped) - fraction) < 5e-4 else Fraction(fraction)


def synthesis_count(n: int, fraction: float) -> int:
    """k = floor(n * fraction), computed exactly (0.333 -> n // 3)."""
    return int(n * exact_fraction(fraction))  # int() of a non-negative Fraction floors


def split_examples(items: list[T], split) -> tuple[list[T], list[T]]:
    """(synthesis, evaluation) for one defect type; `items` must already be sorted by name."""
    items = list(items)
    if split.order == "random":
        random.Random(split.seed).shuffle(items)
    k = synthesis_count(len(items), split.fraction)
    if split.legacy_overlap:
        return items[: k + 1], items[k:]
    return items[:k], items[k:]
