"""Training-free classic baselines: CutPaste, DRAEM-style Perlin anomalies, crop-and-paste."""

from acbench_methods.classic.croppaste import CropPaste
from acbench_methods.classic.cutpaste import CutPaste
from acbench_methods.classic.perlin import PerlinDraem

__all__ = ["CropPaste", "CutPaste", "PerlinDraem"]
