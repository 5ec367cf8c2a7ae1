"""`dataset.kind: auto`: recognise a downloaded dataset's layout from its folders.

The checks go from the most to the least specific layout, since several share `train/good`:
Real-IAD (`realiad_<resolution>/`), MTD (`MT_Free/Imgs`), raw VisA (`<cat>/Data/Images`), MVTec AD 2
(`<cat>/test_public`), MVTec 3D-AD (`<cat>/train/good/rgb`), BTAD (`<cat>/train/ok`), and last the MVTec
AD layout (`<cat>/train/good`), which MPDD and converted VisA share and which is read as `mvtec`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from acbench.data.btad import BTADLayout
from acbench.data.layout import Layout
from acbench.data.mtd import MTDLayout
from acbench.data.mvtec import MVTecLayout
from acbench.data.mvtec3d import MVTec3DLayout
from acbench.data.mvtec_ad2 import MVTecAD2Layout
from acbench.data.realiad import RealIADLayout
from acbench.data.visa import VisALayout
from acbench.errors import UserError

log = logging.getLogger(__name__)

DETECTION_ORDER: tuple[type[Layout], ...] = (RealIADLayout, MTDLayout, VisALayout, MVTecAD2Layout, MVTec3DLayout,
                                             BTADLayout, MVTecLayout)


def detect_kind(root: Path, quiet: bool = False) -> str | None:
    """The kind of layout under `root`, or None; logs the choice unless `quiet`."""
    root = Path(root)
    if not root.is_dir():
        return None
    for layout in DETECTION_ORDER:
        if layout.recognise(root):
            if not quiet:
                log.info("dataset layout: %s (recognised in %s)", layout.kind, root)
            return layout.kind
    return None


def recognise(root: Path) -> str:
    """The layout kind under `root`; a one-line user error when the root is missing or unknown."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset root not found; check 'dataset.root' or the environment variable")
    kind = detect_kind(root)
    if kind is None:
        raise UserError(f"{root}: no known dataset layout (MVTec AD, VisA, MPDD, BTAD, MTD, MVTec 3D-AD, Real-IAD, "
                        f"MVTec AD 2); point 'dataset.root' at the folder as downloaded, or set 'dataset.kind'")
    return kind
