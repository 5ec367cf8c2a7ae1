"""The frozen text-to-image base: LDM (CompVis txt2img-f8-large, AnomalyDiffusion's base), SD-1.5 or tiny.

diffusers loads the LDM text-to-image model as the components of `LDMTextToImagePipeline`
(`bert`, `tokenizer`, `unet`, `vqvae`, `scheduler`); SD-1.5 uses `text_encoder` and `vae` instead. The
`tiny` base is built from configs in code with the same classes as the LDM base (LDMBert, a BERT
word-piece tokenizer, a cross-attention U-Net, a KL autoencoder), random and flagged as such.

Learned token vectors enter the text encoder through a forward hook on its token-embedding layer,
replacing the embeddings at "slot" positions: this works for any text encoder (CLIPTextModel takes
no `inputs_embeds`) and leaves the tokenizer and the frozen model untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
from torch import nn
from transformers import BertTokenizer

from acbench.weights import Resolution, resolve_hf
from acbench_methods.anomalydiffusion.presets import MODELS

log = logging.getLogger(__name__)

PLACEHOLDER = "*"  # the word the textual-inversion templates carry; one token for BERT and CLIP alike


@dataclass
class DiffusionBase:
    """A frozen latent text-to-image model and the operations AnomalyDiffusion needs of it."""

    name: str
    vae: AutoencoderKL
    text_encoder: nn.Module
    tokenizer: object
    unet: UNet2DConditionModel
    scheduler_config: dict
    resolution: int
    resolution_info: Resolution | None = None
    architecture: str = ""

    def __post_init__(self) -> None:
        for module in (self.vae, self.text_encoder, self.unet):
            module.requires_grad_(False).eval()
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)

    @property
    def random_weights(self) -> bool:
        return self.resolution_info is None or self.resolution_info.is_random

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def hidden_size(self) -> int:
        return self.text_encoder.get_input_embeddings().embedding_dim

    @property
    def max_length(self) -> int:
        return int(self.text_encoder.config.max_position_embeddings)

    @property
    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> DiffusionBase:
        for module in (self.vae, self.text_encoder, self.unet):
            module.to(device=device, dtype=dtype)
        return self

    def sampler(self) -> DDIMScheduler:
        return DDIMScheduler.from_config(self.scheduler_config)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents (the posterior mode: deterministic)."""
        latents = self.vae.encode(images.to(self.device, self.dtype)).latent_dist.mode()
        return latents * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1]."""
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    def prompt_ids(self, template: str, n_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of `template` with its placeholder repeated `n_slots` times, and the slot mask."""
        ids = self.tokenizer(template).input_ids
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        pos = next((i for i, tok in enumerate(tokens) if tok.replace("</w>", "") == PLACEHOLDER), None)
        if pos is None:
            raise ValueError(f"template {template!r} has no '{PLACEHOLDER}' placeholder")
        ids = ids[:pos] + [ids[pos]] * n_slots + ids[pos + 1:]
        if len(ids) > self.max_length:
            raise ValueError(f"template {template!r} with {n_slots} slots exceeds {self.max_length} tokens")
        slots = [pos <= i < pos + n_slots for i in range(self.max_length)]
        ids = ids + [self.tokenizer.pad_token_id] * (self.max_length - len(ids))
        return torch.tensor(ids), torch.tensor(slots)

    def empty_prompt_states(self, batch: int) -> torch.Tensor:
        ids = self.tokenizer([""], padding="max_length", max_length=self.max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            states = self.text_encoder(ids.to(self.device))[0]
        return states.expand(batch, -1, -1)

    def text_states(self, ids: torch.Tensor, slots: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Text-encoder states with `vectors` [B, n, D] in place of the slot embeddings (differentiable)."""
        with inject_embeddings(self.text_encoder.get_input_embeddings(), slots.to(self.device), vectors):
            return self.text_encoder(ids.to(self.device))[0]


@contextmanager
def inject_embeddings(embedding: nn.Embedding, slots: torch.Tensor, vectors: torch.Tensor) -> Iterator[None]:
    """While active, the token embeddings at `slots` [B, L] (n per row) are `vectors` [B, n, D]."""

    def hook(_module, _inputs, output):
        out = output.clone()
        out[slots] = vectors.reshape(-1, vectors.shape[-1]).to(out.dtype)
        return out

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------- #
# Loading


def load_base(model: str, policy: str = "pretrained", explicit: str | Path | None = None) -> DiffusionBase:
    """The base model through `acbench.weights.resolve_hf`; a random tiny model when the policy allows."""
    spec = MODELS[model]
    if model == "tiny":
        log.warning("AnomalyDiffusion: tiny random base model (for tests and demos; not comparable)")
        return tiny_base()
    resolution = resolve_hf(f"anomalydiffusion-{model}", spec.hub_id, policy, explicit)  # type: ignore[arg-type]
    if resolution.is_random:
        log.warning("AnomalyDiffusion: no %s weights; using the tiny random architecture instead", model)
        base = tiny_base()
        base.resolution_info = resolution
        return base
    return load_folder(model, Path(resolution.path), resolution)  # type: ignore[arg-type]


def load_folder(model: str, folder: Path, resolution: Resolution | None = None) -> DiffusionBase:
    """Load the components from a diffusers folder (LDM or SD layout)."""
    spec = MODELS[model]
    if spec.layout == "ldm":
        text_encoder = LDMBertModel.from_pretrained(folder, subfolder="bert")
        tokenizer = BertTokenizer.from_pretrained(folder, subfolder="tokenizer")
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vqvae")
    else:
        from transformers import CLIPTextModel, CLIPTokenizer

        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    return DiffusionBase(model, vae, text_encoder, tokenizer, unet, dict(scheduler.config), spec.resolution,
                         resolution, architecture=model)


def save_folder(base: DiffusionBase, folder: Path) -> None:
    """Write the components in the LDM layout (what `load_folder('ldm', folder)` reads)."""
    base.text_encoder.save_pretrained(folder / "bert")
    base.tokenizer.save_pretrained(folder / "tokenizer")
    base.vae.save_pretrained(folder / "vqvae")
    base.unet.save_pretrained(folder / "unet")
    DDIMScheduler.from_config(base.scheduler_config).save_pretrained(folder / "scheduler")


# --------------------------------------------------------------------------------------------- #
# The tiny base: same classes as the LDM base, small configs


TINY_WORDS = ["a", "an", "the", "photo", "of", "with", "rendering", "close-up", "cropped", "good", "clean",
              "bright", "anomaly", "crack", "defect", "-"]


def tiny_tokenizer() -> BertTokenizer:
    """A word-piece tokenizer with a few words and every letter, built in memory (no file needed)."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", PLACEHOLDER, "_", *TINY_WORDS, *letters]
    vocab += [f"##{ch}" for ch in letters]
    vocab = list(dict.fromkeys(vocab))
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, model_max_length=24)


def tiny_base(seed: int = 0) -> DiffusionBase:
    """Random LDM-shaped components: LDMBert (2 layers, 32-d), 4-level U-Net and VAE (latent = image/8)."""
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = LDMBertModel(LDMBertConfig(
            vocab_size=len(tokenizer), max_position_embeddings=24, encoder_layers=2, encoder_ffn_dim=32,
            encoder_attention_heads=2, head_dim=16, d_model=32))
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
            norm_num_groups=8, attention_head_dim=8, cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            block_out_channels=[32, 32, 32, 64], norm_num_groups=16,
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return DiffusionBase("tiny", vae, text_encoder, tokenizer, unet, dict(scheduler.config), MODELS["tiny"].resolution,
                         None, architecture="tiny")
