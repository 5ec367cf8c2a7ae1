"""CSM (cross-modal semantic modelling) and ASEA (anomaly-semantic enhanced attention).

CSM runs a frozen BLIP-2 Q-Former in multimodal mode: the 32 learned query tokens and the tokens of
the reference text attend jointly (self-attention), and the queries cross-attend to the frozen
ViT embeddings of the reference anomaly image. The query outputs are averaged into one feature.
transformers' `Blip2ForImageTextRetrieval` (the BLIP-2 ITM/pretrain Q-Former, with text embeddings)
runs this pass; we call its parts ourselves because ASEA needs the cross-attention maps.

ASEA adds a guidance variable e_g (zeros, the shape of the image embeddings incl. CLS) to the image
embeddings and optimises it per sample with Adam so that the queries' cross-attention, averaged over
layers, heads and queries, patch tokens only, falls inside the reference mask:
loss = (1 - attention mass in the mask / total attention mass)^2. As in the reference code, the
loop runs `steps` forward passes with an Adam update after each; the feature is the last forward's
output (so `steps - 1` updates shape it). No Q-Former or ViT weight changes.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from transformers import Blip2ForImageTextRetrieval, BlipImageProcessor, PreTrainedTokenizerBase

MAX_TEXT_TOKENS = 32  # the `strict` cleaning's token limit (LAVIS `max_txt_len` of BLIP-2 retrieval)
LAVIS_PUNCTUATION = re.compile(r"[.!\"()*#:;~]")


def clean_caption(text: str, max_words: int = 50, mode: str = "strict") -> str:
    """Caption text for the Q-Former.

    `lavis`: LAVIS `BlipCaptionProcessor.pre_caption` as the released code runs it (lower case, only
    `.!"()*#:;~` to spaces, at most `max_words` words; commas, hyphens and apostrophes stay).
    `strict`: lower case and every punctuation character to a space, at most `max_words` words.
    """
    pattern = LAVIS_PUNCTUATION if mode == "lavis" else re.compile(f"[{re.escape(string.punctuation)}]")
    return " ".join(pattern.sub(" ", text.lower()).split()[:max_words])


def patch_grid_mask(mask: np.ndarray, vit_size: int, grid: int) -> np.ndarray:
    """A reference mask on the ViT patch grid (row-major, float 0/1), the way the released code builds it:
    PIL nearest from the mask's own resolution to the ViT input size, then PIL nearest to the grid.
    PIL's nearest samples cell centres; torch's default `nearest` samples top-left corners, which shifts
    the grid by half a patch and can drop a small defect entirely."""
    image = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    image = image.resize((vit_size, vit_size), Image.NEAREST).resize((grid, grid), Image.NEAREST)
    return (np.asarray(image) >= 128).astype(np.float32).reshape(-1)


@dataclass
class CSMResult:
    features: torch.Tensor  # B x hidden (the mean over query outputs)
    losses: list[list[float]] = field(default_factory=list)  # per ASEA step, per sample
    mask_attention: list[list[float]] = field(default_factory=list)  # in-mask attention share per step


class CrossModalSemantics:
    """The frozen BLIP-2 Q-Former feature extractor with ASEA guidance."""

    def __init__(
        self,
        model: Blip2ForImageTextRetrieval,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: BlipImageProcessor,
        cleaning: str = "strict",
    ) -> None:
        model.qformer.set_attn_implementation("eager")  # SDPA cannot return the attention probabilities
        self.model = model.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.cleaning = cleaning
        self.source = "random"  # where the weights came from (a folder), for provenance and resume keys
        vision = model.config.vision_config
        self.grid = vision.image_size // vision.patch_size

    @property
    def device(self) -> torch.device:
        return self.model.query_tokens.device

    @property
    def feature_dim(self) -> int:
        return self.model.config.qformer_config.hidden_size

    def fingerprint(self) -> str:
        """Identifies the weights (for the feature cache) from a few tensors that any retraining changes."""
        model = self.model
        digest = hashlib.sha256()
        for tensor in (
            model.query_tokens,
            model.vision_model.embeddings.patch_embedding.weight,
            model.embeddings.word_embeddings.weight,
            list(model.qformer.parameters())[-1],
        ):
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def _pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        pixels = self.image_processor(images=list(images), return_tensors="pt").pixel_values
        return pixels.to(self.device, self.model.vision_model.dtype)

    def _patch_masks(self, masks: Sequence[np.ndarray]) -> torch.Tensor:
        """B x patches: each reference mask (any resolution) on the ViT patch grid."""
        size = self.model.config.vision_config.image_size
        grids = [patch_grid_mask(m, size, self.grid) for m in masks]
        return torch.from_numpy(np.stack(grids)).to(self.device)

    def _qformer(
        self,
        image_embeds: torch.Tensor,
        ids: torch.Tensor | None,
        text_mask: torch.Tensor | None,
        with_attentions: bool,
    ):
        model = self.model
        batch = image_embeds.shape[0]
        queries = model.query_tokens.expand(batch, -1, -1)
        n_query = queries.shape[1]
        embeddings = model.embeddings(input_ids=ids, query_embeds=queries)
        attention_mask = torch.ones(batch, n_query, dtype=torch.long, device=self.device)
        if text_mask is not None:
            attention_mask = torch.cat([attention_mask, text_mask], dim=1)
        out = model.qformer(
            query_embeds=embeddings,
            query_length=n_query,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device),
            output_attentions=with_attentions,
            return_dict=True,
        )
        features = out.last_hidden_state[:, :n_query].mean(dim=1)
        return features, out.cross_attentions

    def patch_attention(self, cross_attentions) -> torch.Tensor:
        """B x patches: cross-attention averaged over layers, heads and queries, CLS key dropped."""
        maps = torch.stack([a for a in cross_attentions if a is not None])  # L x B x heads x Q x (1+P)
        return maps.float().mean(dim=(0, 2, 3))[:, 1:]

    @staticmethod
    def mask_share(attention: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
        return (attention * patch_mask).sum(-1) / attention.sum(-1)

    def __call__(
        self,
        images: Sequence[np.ndarray],
        texts: Sequence[str] | None,
        masks: Sequence[np.ndarray],
        asea_steps: int = 5,
        asea_lr: float = 0.1,
    ) -> CSMResult:
        """Features of reference (image, text, mask) triples; `texts=None` is the image-only ablation."""
        with torch.no_grad():
            image_embeds = self.model.vision_model(
                pixel_values=self._pixels(images)
            ).last_hidden_state.float()
        ids = text_mask = None
        if texts is not None:
            limit = (
                MAX_TEXT_TOKENS
                if self.cleaning == "strict"
                else self.model.config.qformer_config.max_position_embeddings
            )
            tokens = self.tokenizer(
                [clean_caption(t, mode=self.cleaning) for t in texts],
                padding="longest",
                truncation=True,
                max_length=limit,
                return_tensors="pt",
            ).to(self.device)
            ids, text_mask = tokens.input_ids, tokens.attention_mask
        if asea_steps <= 0:
            with torch.no_grad():
                return CSMResult(self._qformer(image_embeds, ids, text_mask, False)[0])
        return self._guided(image_embeds, ids, text_mask, self._patch_masks(masks), asea_steps, asea_lr)

    def _guided(self, image_embeds, ids, text_mask, patch_mask, steps: int, lr: float) -> CSMResult:
        guidance = torch.zeros_like(image_embeds, requires_grad=True)
        optimiser = torch.optim.Adam([guidance], lr=lr)
        result = CSMResult(features=torch.empty(0))
        for _ in range(steps):
            with torch.enable_grad():
                features, cross = self._qformer(image_embeds + guidance, ids, text_mask, True)
                share = self.mask_share(self.patch_attention(cross), patch_mask)
                per_sample = (1 - share) ** 2
                optimiser.zero_grad()
                # Samples are independent (Adam is element-wise), so one summed loss optimises each e_g
                # exactly as a separate per-sample loop would.
                per_sample.sum().backward()
                optimiser.step()
            result.losses.append(per_sample.detach().cpu().tolist())
            result.mask_attention.append(share.detach().cpu().tolist())
            result.features = features.detach()
        return result
