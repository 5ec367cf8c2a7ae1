"""Model presets (which networks, at which size) and schedule presets (how long to train and sample)."""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoProcessor,
    BertTokenizer,
    Blip2Config,
    Blip2ForImageTextRetrieval,
    BlipImageProcessor,
)

from acbench.errors import UserError
from acbench.weights import Policy, Resolution, resolve_hf, resolve_hf_file
from acbench_methods.anomalycontrol.csm import CrossModalSemantics

log = logging.getLogger(__name__)

BLIP2_ITM_REPO = "Salesforce/blip2-itm-vit-g"
IP_ADAPTER_REPO = "h94/IP-Adapter"
IP_ADAPTER_SD15_FILE = "ip-adapter_sd15.safetensors"
#: Where h94/IP-Adapter keeps the SD-1.5 adapter (safetensors first, then the original .bin).
IP_ADAPTER_SD15_FILES = ("models/ip-adapter_sd15.safetensors", "models/ip-adapter_sd15.bin")


@dataclass(frozen=True)
class ModelPreset:
    diffusion: str  # build_inpaint_components model name
    resolution: int  # diffusion image size
    proj_dim: int  # width of the feature projection (1024 in the reference, the CLIP-H size)
    num_tokens: int  # semantic tokens per image


@dataclass(frozen=True)
class Schedule:
    train_steps: int  # optimiser updates
    batch_size: int
    grad_accumulation: int
    learning_rate: float
    checkpoint_every: int
    inference_steps: int


MODELS = {
    "sd15": ModelPreset("sd15", 512, 1024, 4),
    "sd15-arch": ModelPreset("sd15-arch", 512, 1024, 4),
    "tiny": ModelPreset("tiny", 64, 64, 4),
}

SCHEDULES = {
    # The released code: 200k micro-batches of 8 with accumulation 2 = 100k updates of 16 images.
    "paper": Schedule(100_000, 8, 2, 1e-4, 10_000, 50),
    "fast": Schedule(3_000, 8, 1, 1e-4, 500, 50),
    "tiny": Schedule(4, 2, 1, 1e-3, 2, 4),
}

# Published config of Salesforce/blip2-itm-vit-g: EVA ViT-g/14 at 224 px, BERT-base Q-Former, 32 queries.
BLIP2_ITM_CONFIG = {
    "vision_config": {
        "hidden_size": 1408,
        "intermediate_size": 6144,
        "num_hidden_layers": 39,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "qkv_bias": True,
    },
    "qformer_config": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "encoder_hidden_size": 1408,
        "vocab_size": 30523,
        "cross_attention_frequency": 2,
        "use_qformer_text_input": True,
        "max_position_embeddings": 512,
    },
    "num_query_tokens": 32,
    "image_text_hidden_size": 256,
}
TINY_BLIP2_CONFIG = {
    "vision_config": {
        "hidden_size": 48,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
    },
    "qformer_config": {
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "encoder_hidden_size": 48,
        "cross_attention_frequency": 2,
        "use_qformer_text_input": True,
        "max_position_embeddings": 64,
    },
    "num_query_tokens": 8,
    "image_text_hidden_size": 16,
}


def character_bert_tokenizer() -> BertTokenizer:
    """A BERT word-piece tokenizer over single characters: BERT conventions without a vocab file."""
    chars = string.ascii_lowercase + string.digits
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *chars,
        *(f"##{c}" for c in chars),
        *string.punctuation,
    ]
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})


def random_csm(architecture: str, seed: int = 0) -> CrossModalSemantics:
    """A randomly initialised Q-Former extractor of the tiny or the full (ViT-g) architecture."""
    # With random text embeddings a character vocabulary is as good as BERT's (and needs no file);
    # the full architecture keeps BERT's vocabulary size so its embedding table has the real shape.
    tokenizer = character_bert_tokenizer()
    cfg = TINY_BLIP2_CONFIG if architecture == "tiny" else BLIP2_ITM_CONFIG
    qformer = dict(
        cfg["qformer_config"], vocab_size=max(len(tokenizer), cfg["qformer_config"].get("vocab_size", 0))
    )
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(Blip2Config(**{**cfg, "qformer_config": qformer}))
    size = cfg["vision_config"]["image_size"]
    processor = BlipImageProcessor(size={"height": size, "width": size})
    log.warning("RANDOM WEIGHTS for the BLIP-2 Q-Former (%s): features are not meaningful", architecture)
    return CrossModalSemantics(model, tokenizer, processor)


def load_csm(folder: str | Path, dtype: torch.dtype | None = None) -> CrossModalSemantics:
    """The BLIP-2 ITM model (Q-Former with text embeddings) from a local folder, offline."""
    try:
        model = Blip2ForImageTextRetrieval.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{folder}: not a BLIP-2 image-text-retrieval folder ({str(exc).splitlines()[0]}); "
            f"download {BLIP2_ITM_REPO}"
        ) from None
    if not model.config.qformer_config.use_qformer_text_input:
        raise UserError(f"{folder}: this BLIP-2 Q-Former has no text input; CSM needs {BLIP2_ITM_REPO}")
    tokenizer = processor.tokenizer
    # transformers silently builds a 5-token tokenizer when the files are missing: check it.
    if len(tokenizer) < 50:
        raise UserError(
            f"{folder}: tokenizer has {len(tokenizer)} tokens for a Q-Former vocabulary of "
            f"{model.config.qformer_config.vocab_size}; the tokenizer files are missing or corrupt"
        )
    return CrossModalSemantics(model, tokenizer, processor.image_processor)


def build_csm(
    model: str,
    policy: Policy,
    path: str | Path | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> tuple[CrossModalSemantics, bool]:
    """(extractor, random_weights) for a model preset."""
    if model == "sd15":
        resolution = resolve_hf("blip2-itm-vit-g", BLIP2_ITM_REPO, policy, path)
        if not resolution.is_random:
            csm = load_csm(resolution.path, dtype)
            csm.source = str(resolution.path)
            return csm, False
    architecture = "tiny" if model == "tiny" else "vit-g"
    csm = random_csm(architecture, seed)
    if dtype is not None:
        csm.model.vision_model.to(dtype)
    return csm, True


def resolve_ip_adapter(policy: Policy, explicit: str | Path | None = None) -> Resolution:
    """The IP-Adapter SD-1.5 checkpoint that initialises SGA: an explicit file or repository copy, the
    hub cache, or a download of that one file (`acbench.weights`)."""
    if explicit is not None:  # a file, or a copy of the repository (models/ or flat)
        return Resolution("ip-adapter-sd15", "path", str(ip_adapter_file(explicit)))
    return resolve_hf_file("ip-adapter-sd15", IP_ADAPTER_REPO, IP_ADAPTER_SD15_FILES, policy)


def ip_adapter_file(path: str | Path) -> Path:
    """The IP-Adapter SD1.5 checkpoint: the file itself, or found in a copy of the h94/IP-Adapter repo."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (
            path / "models" / IP_ADAPTER_SD15_FILE,
            path / IP_ADAPTER_SD15_FILE,
            path / "models" / "ip-adapter_sd15.bin",
            path / "ip-adapter_sd15.bin",
        ):
            if candidate.is_file():
                return candidate
    elif path.is_file():
        return path
    raise UserError(
        f"ip_adapter_path: {path} is neither {IP_ADAPTER_SD15_FILE} nor a folder holding "
        f"models/{IP_ADAPTER_SD15_FILE}; download it from h94/IP-Adapter or drop the option"
    )
