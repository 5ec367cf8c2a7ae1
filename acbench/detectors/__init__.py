"""Detectors trained on synthetic anomalies and evaluated on real ones."""

from acbench.detectors.base import Detector

__all__ = ["Detector"]
