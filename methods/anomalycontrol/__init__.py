"""AnomalyControl (He et al., arXiv 2412.06510): SD-inpainting guided by cross-modal anomaly semantics."""
