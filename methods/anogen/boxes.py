"""AnoGen's target masks: one random, optionally rotated rectangle per pair, on the product.

The procedure (AnoGen `utils_scripts/creatMask_v2.py`, described in the paper as box guidance):

- everything happens on a 256 x 256 copy of the normal image (the mask is resized to the image at the end);
- the product's foreground is Otsu's threshold of the grey image, inverted when the top-left pixel is
  foreground (a bright background), then closed with a 15 x 15 elliptical kernel;
- a box of integer width and height drawn uniformly from the type's range (fractions of 256) is placed
  uniformly inside the frame, then rotated about its centre by a whole number of degrees in [0, 180];
- the box is kept when more than 75 % of its nominal area (width x height) lies on the foreground;
  otherwise another is drawn.

`RANGES` is AnoGen's per-type table for MVTec AD (`utils_scripts/mvtec_range.json`, re-typed as data):
(width range, height range, rotate flag). The table has no entry for `screw` (its released masks were drawn
by hand per image); those types and every category outside MVTec AD get `DEFAULT_RANGE`, AnoGen's range for
every VisA type (`utils_scripts/visa_range.json`).

Rotation: the code reads the flag from JSON as the *string* "True" or "False" and tests its truth, which is
true for both, so every released box is rotated. `rotation: always` (default) reproduces that; `table`
honours the flag as written; `never` keeps every box axis-aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORK_SIDE = 256
MIN_ON_PRODUCT = 0.75
MAX_TRIES = 5_000  # AnoGen retries forever; after this many the plugin gives up the foreground rule

Range = tuple[tuple[float, float], tuple[float, float], bool]

DEFAULT_RANGE: Range = ((0.05, 0.2), (0.05, 0.2), True)

_TABLE: dict[str, dict[str, tuple[float, float, float, float, bool]]] = {  # w_lo, w_hi, h_lo, h_hi, rotate
    "bottle": {"broken_large": (0.20, 0.25, 0.25, 0.8, True), "broken_small": (0.15, 0.25, 0.15, 0.25, False),
               "contamination": (0.2, 0.4, 0.2, 0.4, True)},
    "cable": {"bent_wire": (0.1, 0.25, 0.1, 0.25, False), "cable_swap": (0.3, 0.4, 0.3, 0.4, False),
              "combined": (0.1, 0.2, 0.1, 0.2, False), "cut_inner_insulation": (0.1, 0.2, 0.1, 0.2, False),
              "cut_outer_insulation": (0.1, 0.2, 0.2, 0.4, True), "missing_cable": (0.4, 0.4, 0.4, 0.4, False),
              "missing_wire": (0.1, 0.2, 0.1, 0.2, False), "poke_insulation": (0.1, 0.2, 0.1, 0.2, False)},
    "capsule": {"crack": (0.1, 0.2, 0.1, 0.3, True), "faulty_imprint": (0.15, 0.25, 0.15, 0.25, False),
                "poke": (0.05, 0.15, 0.05, 0.15, False), "scratch": (0.05, 0.15, 0.15, 0.25, True),
                "squeeze": (0.25, 0.4, 0.3, 0.4, True)},
    "carpet": {"color": (0.1, 0.25, 0.1, 0.25, True), "cut": (0.05, 0.15, 0.05, 0.15, True),
               "hole": (0.05, 0.15, 0.05, 0.15, False), "metal_contamination": (0.05, 0.2, 0.05, 0.2, True),
               "thread": (0.05, 0.2, 0.05, 0.2, True)},
    "grid": {"bent": (0.05, 0.15, 0.05, 0.15, False), "broken": (0.1, 0.2, 0.1, 0.2, False),
             "glue": (0.1, 0.2, 0.1, 0.2, False), "metal_contamination": (0.1, 0.2, 0.1, 0.2, False),
             "thread": (0.05, 0.1, 0.1, 0.4, True)},
    "hazelnut": {"crack": (0.2, 0.35, 0.2, 0.35, False), "cut": (0.05, 0.2, 0.2, 0.3, True),
                 "hole": (0.1, 0.15, 0.1, 0.15, False), "print": (0.2, 0.4, 0.2, 0.4, True)},
    "leather": {"color": (0.05, 0.1, 0.1, 0.2, True), "cut": (0.05, 0.1, 0.1, 0.2, True),
                "fold": (0.05, 0.1, 0.1, 0.2, True), "glue": (0.05, 0.15, 0.05, 0.15, True),
                "poke": (0.05, 0.15, 0.05, 0.15, True)},
    "metal_nut": {"bent": (0.1, 0.2, 0.1, 0.2, True), "color": (0.05, 0.1, 0.1, 0.2, True),
                  "flip": (0.9, 0.9, 0.9, 0.9, False), "scratch": (0.2, 0.4, 0.2, 0.4, True)},
    "pill": {"color": (0.05, 0.15, 0.05, 0.15, True), "combined": (0.05, 0.15, 0.05, 0.15, True),
             "contamination": (0.05, 0.15, 0.05, 0.15, True), "crack": (0.05, 0.1, 0.1, 0.2, True),
             "faulty_imprint": (0.1, 0.4, 0.1, 0.4, False), "pill_type": (0.8, 0.8, 0.5, 0.5, False),
             "scratch": (0.05, 0.1, 0.1, 0.2, True)},
    "tile": {"crack": (0.05, 0.1, 0.2, 1.0, True), "glue_strip": (0.1, 0.4, 0.1, 0.4, True),
             "gray_stroke": (0.1, 0.4, 0.1, 0.4, True), "oil": (0.1, 0.4, 0.1, 0.4, False),
             "rough": (0.1, 0.4, 0.1, 0.4, True)},
    "toothbrush": {"defective": (0.1, 0.15, 0.1, 0.15, False)},
    "transistor": {"bent_lead": (0.2, 0.4, 0.15, 0.3, False), "cut_lead": (0.3, 0.6, 0.15, 0.4, False),
                   "damaged_case": (0.25, 0.4, 0.25, 0.4, False), "misplaced": (0.9, 0.9, 0.9, 0.9, False)},
    "wood": {"color": (0.1, 0.3, 0.1, 0.3, True), "combined": (0.1, 0.3, 0.1, 0.3, True),
             "hole": (0.05, 0.15, 0.05, 0.15, False), "liquid": (0.1, 0.3, 0.1, 0.3, True),
             "scratch": (0.1, 0.2, 0.2, 0.5, True)},
    "zipper": {t: (0.05, 0.15, 0.1, 0.2, False) for t in ("broken_teeth", "combined", "fabric_border",
                                                          "fabric_interior", "rough", "split_teeth",
                                                          "squeezed_teeth")},
}

RANGES: dict[str, Range] = {f"{c}/{t}": ((w0, w1), (h0, h1), rot)
                            for c, types in _TABLE.items() for t, (w0, w1, h0, h1, rot) in types.items()}


def box_range(category: str, anomaly_type: str, overrides: dict[str, Range] | None = None) -> tuple[Range, bool]:
    """The type's range and whether it came from a table (overrides, then AnoGen's) rather than the default."""
    key = f"{category}/{anomaly_type}"
    for table in (overrides or {}, RANGES):
        if key in table:
            return table[key], True
    return DEFAULT_RANGE, False


def product_foreground(image: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """AnoGen's foreground template of a uint8 RGB image: bool [side, side]."""
    grey = cv2.cvtColor(cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2GRAY)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if binary[0, 0] == 255:
        binary = cv2.bitwise_not(binary)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    return cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel) > 0


@dataclass(frozen=True)
class Box:
    mask: np.ndarray  # bool [side, side]
    width: int
    height: int
    angle: int  # degrees
    on_product: float  # the fraction of width x height on the foreground
    tries: int


def box_window(shape: tuple[int, int], x: int, y: int, width: int, height: int,
               angle: float) -> tuple[np.ndarray, int, int]:
    """The rotated box drawn only over its bounding window (clipped to the frame): (window, top, left)."""
    centre = (x + (width - 1) / 2, y + (height - 1) / 2)
    # fillPoly fills the polygon's boundary too, so the corners go through the outer pixels' centres
    # (side - 1): exactly width x height pixels when unrotated. Corners in 1/16 px (fillPoly's `shift`).
    corners = cv2.boxPoints((centre, (width - 1, height - 1), angle))
    top, left = max(0, int(np.floor(corners[:, 1].min()))), max(0, int(np.floor(corners[:, 0].min())))
    bottom = min(shape[0], int(np.ceil(corners[:, 1].max())) + 1)
    right = min(shape[1], int(np.ceil(corners[:, 0].max())) + 1)
    window = np.zeros((max(0, bottom - top), max(0, right - left)), np.uint8)
    if window.size:
        points = np.round((corners - np.array([left, top], np.float32)) * 16).astype(np.int32)
        cv2.fillPoly(window, [points], 1, lineType=cv2.LINE_8, shift=4)
    return window.astype(bool), top, left


def draw_box(shape: tuple[int, int], x: int, y: int, width: int, height: int, angle: float) -> np.ndarray:
    """A filled width x height rectangle with its top-left corner at (x, y), rotated about its centre."""
    window, top, left = box_window(shape, x, y, width, height, angle)
    canvas = np.zeros(shape, bool)
    canvas[top:top + window.shape[0], left:left + window.shape[1]] = window
    return canvas


def sample_box(foreground: np.ndarray, box: Range, rotate: bool, rng: np.random.Generator,
               min_on_product: float = MIN_ON_PRODUCT, max_tries: int = MAX_TRIES) -> Box | None:
    """Draw boxes until one lies on the foreground; None after `max_tries` failures.

    Only each box's bounding window is drawn and compared (AnoGen draws on the full frame; the result is
    the same, and a long search on a texture stays cheap).
    """
    side_h, side_w = foreground.shape
    (w_lo, w_hi), (h_lo, h_hi), _ = box
    w_min, w_max = max(1, int(w_lo * side_w)), min(side_w, max(1, int(w_hi * side_w)))
    h_min, h_max = max(1, int(h_lo * side_h)), min(side_h, max(1, int(h_hi * side_h)))
    for tries in range(1, max_tries + 1):
        width = int(rng.integers(w_min, max(w_min, w_max) + 1))
        height = int(rng.integers(h_min, max(h_min, h_max) + 1))
        x, y = int(rng.integers(0, side_w - width + 1)), int(rng.integers(0, side_h - height + 1))
        angle = int(rng.integers(0, 181)) if rotate else 0
        window, top, left = box_window(foreground.shape, x, y, width, height, angle)
        on = foreground[top:top + window.shape[0], left:left + window.shape[1]]
        on_product = float((window & on).sum()) / (width * height)
        if on_product > min_on_product:
            return Box(draw_box(foreground.shape, x, y, width, height, angle), width, height, angle, on_product, tries)
    return None
