"""acbench: an evaluation and benchmarking suite for industrial anomaly synthesis."""

__version__ = "0.1.0"
