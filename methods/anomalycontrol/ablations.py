"""What each ablation variant of AnomalyControl switches off: the one table the model and the report read.

The paper's ablation (Table 4 of arXiv 2412.06510) removes one module at a time: CSM (cross-modal
semantic modelling), ASEA (anomaly-semantic enhanced attention) and SGA (semantic guided adapter).
The released code has only one of these switches, `use_mask` (ASEA on/off); the other two variants
are this project's reading of the paper's text, marked `reading` below and in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

MODULES = ("CSM", "ASEA", "SGA")


@dataclass(frozen=True)
class Variant:
    csm: bool  # the reference caption takes part in the Q-Former pass (else image-only features)
    asea: bool  # ASEA guidance passes run (else the plain Q-Former forward pass)
    sga: bool  # the adapter injects the feature into the UNet (else plain SD-inpainting with the prompt)
    meaning: str  # what is switched off, in the paper's terms
    reading: bool  # True: the paper's definition could not be checked against released code

    @property
    def modules(self) -> tuple[bool, bool, bool]:
        """On/off of (CSM, ASEA, SGA) as the report's ✓/✗ grid shows them: without SGA no CSM feature
        reaches the UNet, so CSM and ASEA count as off too."""
        return (self.csm and self.sga, self.asea and self.sga, self.sga)


VARIANTS: dict[str, Variant] = {
    "full": Variant(True, True, True, "the released model: CSM with ASEA, injected through SGA", False),
    "no_csm": Variant(
        False,
        True,
        True,
        "no cross-modal semantics: the Q-Former sees the reference image only (no caption); "
        "ASEA and SGA unchanged",
        True,
    ),
    "no_asea": Variant(
        True,
        False,
        True,
        "no anomaly-semantic enhanced attention: zero guidance passes, the plain multimodal Q-Former "
        "feature (the released `use_mask=False`)",
        False,
    ),
    "no_sga": Variant(
        False,
        False,
        False,
        "no semantic guided adapter: plain SD-1.5-inpainting with the text prompt; no adapter, "
        "so no CSM feature reaches the UNet",
        True,
    ),
}
