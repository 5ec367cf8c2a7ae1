"""Training-free classic baselines: CutPaste, DRAEM-style Perlin anomalies, crop-and-paste, and the Perlin
family of MemSeg, DeSTSeg, GLASS and RealNet."""

from acbench_methods.classic.croppaste import CropPaste
from acbench_methods.classic.cutpaste import CutPaste
from acbench_methods.classic.destseg import DeSTSeg
from acbench_methods.classic.glass import Glass
from acbench_methods.classic.memseg import MemSeg
from acbench_methods.classic.perlin import PerlinDraem
from acbench_methods.classic.realnet import RealNet

__all__ = ["CropPaste", "CutPaste", "DeSTSeg", "Glass", "MemSeg", "PerlinDraem", "RealNet"]
