"""DualAnoDiff's trainable parts on a frozen SD-1.5 UNet, as diffusers attention processors.

The UNet runs a batch laid out as (image, branch) pairs: row 2i is image i's whole-image ("blend")
branch, row 2i+1 its anomaly-only ("fg") branch. Every attention processor of the UNet (self and
cross) is replaced by `DualBranchProcessor`, which

1. runs the layer's frozen attention once per branch, with that branch's own rank-r LoRA on the
   query, key, value and output projections (`W x + B A x`, A ~ N(0, 1/r), B = 0 at start, as
   diffusers' LoRA layers);
2. adds a cross-branch attention: LayerNorm -> Linear -> for every spatial token, single-head
   attention across the two branches (full-rank q, k, v, o) -> added to the attention output. As in
   the official code these layers start random, not zero, and are trained with the LoRAs;
3. (`variant: bcm`) background compensation: a reference pass of the UNet over a noised normal image
   (`ReferenceState.mode == "write"`, one row per image, branch-0 LoRA, no cross-branch attention)
   stores each self-attention's input; in the main pass the blend branch's self-attention keys and
   values come from `(1 - a) h + a MLP(h_ref)`, `a` a learned gate starting at 0.

Why not peft: peft wraps `nn.Linear` layers with one active adapter per forward (mixed-adapter
batches are inference-only), but here two adapters are selected by batch position inside one
training forward, next to new cross-branch layers; an attention processor (the diffusers extension
point) does all of it in one place. The text encoder's LoRA (`TextEncoderLoRA`) is shared by both
prompts and enters through forward hooks on CLIP's q/k/v/out projections.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from safetensors.torch import load_file, save_file
from torch import nn

BRANCHES = 2  # 0: blend (whole image), 1: fg (anomaly only)
REFERENCE_HIDDEN = 320  # width of the reference MLP (the BCM code's)


class LoRA(nn.Module):
    """The low-rank update `B A x` of one linear layer (A: down, B: up; B starts at zero)."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.normal_(self.down.weight, std=1 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x.to(self.down.weight.dtype))).to(x.dtype)


class CrossBranchAttention(nn.Module):
    """Per spatial token, single-head attention across the branches, returned as a residual."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.proj_in = nn.Linear(hidden, hidden)
        self.q, self.k, self.v, self.out = (nn.Linear(hidden, hidden) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b*f, L, C)
        n, length, channels = x.shape
        y = self.proj_in(self.norm(x.to(self.norm.weight.dtype)))
        y = y.view(n // BRANCHES, BRANCHES, length, channels).transpose(1, 2).reshape(-1, BRANCHES, channels)
        y = self.out(F.scaled_dot_product_attention(self.q(y), self.k(y), self.v(y)))
        y = y.view(n // BRANCHES, length, BRANCHES, channels).transpose(1, 2)
        return y.reshape(n, length, channels).to(x.dtype)


@dataclass
class ReferenceState:
    """Shared by all processors of one UNet: which pass runs, and the stored reference features."""

    mode: Literal["off", "write", "read"] = "off"
    bank: dict[str, torch.Tensor] = field(default_factory=dict)


class DualBranchProcessor(nn.Module):
    """One attention layer of the dual-branch UNet (see the module docstring)."""

    def __init__(self, name: str, hidden: int, context: int, rank: int, reference: bool,
                 state: ReferenceState) -> None:
        super().__init__()
        self.name = name
        self.lora = nn.ModuleDict({
            key: nn.ModuleList(LoRA(hidden if key in ("q", "out") else context, hidden, rank) for _ in range(BRANCHES))
            for key in ("q", "k", "v", "out")
        })
        self.cross_branch = CrossBranchAttention(hidden)
        self.reference = reference  # self-attention of a BCM model: reads / writes the reference
        if reference:
            self.ref_mlp = nn.Sequential(nn.Linear(hidden, REFERENCE_HIDDEN), nn.Linear(REFERENCE_HIDDEN, hidden))
            self.ref_gate = nn.Parameter(torch.zeros(1))
        self._state = [state]  # a list keeps it out of the module tree (not a parameter, not saved)

    @property
    def state(self) -> ReferenceState:
        return self._state[0]

    def _lora(self, key: str, x: torch.Tensor, split: bool) -> torch.Tensor:
        """The LoRA update of projection `key`: each branch's own on its rows, or branch 0's on all."""
        if not split:
            return self.lora[key][0](x)
        rows = x.view(x.shape[0] // BRANCHES, BRANCHES, *x.shape[1:])
        return torch.stack([self.lora[key][b](rows[:, b]) for b in range(BRANCHES)], dim=1).view(
            *x.shape[:-1], -1)

    def _attend(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None, split: bool,
                kv_source: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's attention plus the LoRA updates (diffusers' AttnProcessor2_0 arithmetic).

        The frozen projections and the attention run over the whole batch, exactly as the base
        processor does, so that with zero LoRA the result is bit-identical to the base UNet's.
        """
        if context is None:
            context = x if kv_source is None else kv_source
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.to_q(x) + self._lora("q", x, split)
        key = attn.to_k(context) + self._lora("k", context, split)
        value = attn.to_v(context) + self._lora("v", context, split)
        batch, head_dim = x.shape[0], key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out) + self._lora("out", out, split)
        return attn.to_out[1](out)

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if attention_mask is not None or hidden_states.ndim != 3 or attn.group_norm is not None:
            raise NotImplementedError("DualBranchProcessor supports the SD UNet's transformer attention only")
        residual, mode = hidden_states, self.state.mode
        if mode == "write":  # the reference pass: one row per image, blend-branch LoRA
            if self.reference:
                self.state.bank[self.name] = hidden_states
            out = self._attend(attn, hidden_states, encoder_hidden_states, split=False)
        else:
            kv = None
            if mode == "read" and self.reference:  # blend rows attend to (1 - a) h + a MLP(h_ref)
                n = hidden_states.shape[0]
                rows = hidden_states.view(n // BRANCHES, BRANCHES, *hidden_states.shape[1:])
                ref = self.ref_mlp(self.state.bank[self.name].to(self.ref_gate.dtype)).to(rows.dtype)
                gate = self.ref_gate.to(rows.dtype)
                kv = torch.stack([(1 - gate) * rows[:, 0] + gate * ref, rows[:, 1]], dim=1).view_as(hidden_states)
            out = self._attend(attn, hidden_states, encoder_hidden_states, split=True, kv_source=kv)
            out = out + self.cross_branch(out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class TextEncoderLoRA(nn.Module):
    """LoRA on the q/k/v/out projections of every CLIP text-encoder attention layer, via forward hooks."""

    def __init__(self, text_encoder: nn.Module, rank: int) -> None:
        super().__init__()
        self.layers = nn.ModuleDict()
        self._targets: list[tuple[str, nn.Linear]] = []
        for name, module in text_encoder.named_modules():
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "out_proj"):
                key = name.replace(".", "__")
                self.layers[key] = LoRA(module.in_features, module.out_features, rank)
                self._targets.append((key, module))
        if not self._targets:
            raise ValueError("TextEncoderLoRA: no q/k/v/out projections found in the text encoder")
        self._handles: list = []

    def attach(self) -> TextEncoderLoRA:
        self.detach()
        for key, module in self._targets:
            lora = self.layers[key]
            self._handles.append(module.register_forward_hook(lambda _m, inp, out, lora=lora: out + lora(inp[0])))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class DualAdapter(nn.Module):
    """All trainable parts of one (category, type): UNet processors and (optionally) text LoRA."""

    def __init__(self, unet: UNet2DConditionModel, rank: int, bcm: bool = False,
                 text_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.state = ReferenceState()
        self.bcm = bcm
        self.processors = nn.ModuleDict()
        self._names: dict[str, str] = {}
        for name in unet.attn_processors:
            module = unet.get_submodule(name.removesuffix(".processor"))
            hidden = module.to_q.out_features
            context = module.to_k.in_features
            is_self = name.endswith("attn1.processor")
            key = name.replace(".", "__")
            self.processors[key] = DualBranchProcessor(key, hidden, context, rank, bcm and is_self, self.state)
            self._names[name] = key
        self.text = TextEncoderLoRA(text_encoder, rank) if text_encoder is not None else None

    def attach(self, unet: UNet2DConditionModel) -> DualAdapter:
        unet.set_attn_processor({name: self.processors[key] for name, key in self._names.items()})
        if self.text is not None:
            self.text.attach()
        return self

    def detach(self, unet: UNet2DConditionModel) -> None:
        unet.set_attn_processor(AttnProcessor2_0())
        if self.text is not None:
            self.text.detach()

    @contextmanager
    def reference(self, mode: Literal["write", "read"]) -> Iterator[None]:
        self.state.mode = mode
        try:
            yield
        finally:
            self.state.mode = "off"

    def clear_reference(self) -> None:
        self.state.bank.clear()

    def trainable_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters()]

    def save(self, path: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(path))

    def load(self, path: Path) -> None:
        state = load_file(str(path))
        mine = self.state_dict()
        missing = sorted(set(mine) - set(state))
        unexpected = sorted(set(state) - set(mine))
        shapes = [k for k in set(mine) & set(state) if mine[k].shape != state[k].shape]
        if missing or unexpected or shapes:
            raise ValueError(f"{path}: adapter does not match this model ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected, {len(shapes)} differently shaped tensors)")
        self.load_state_dict(state)
