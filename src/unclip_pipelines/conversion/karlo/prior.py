"""
Karlo's prior (a causal transformer) → diffusers' :class:`~diffusers.PriorTransformer`, including the split of its
fused ``c_qkv`` projections, whose rows Karlo interleaves per attention head.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..common import ConversionError, Rule, apply_rules, load_into_model
from .config import (
    KARLO_PRIOR_NUM_HEADS,
    PRIOR_EXTRA_TOKENS,
    PRIOR_PREFIX,
    _agree,
    _count_indices,
    _hparams,
    _pick,
    _require,
    load_karlo_config,
)
from .rules import _copy, _empty_model, _fused_heads, _linear, _norm
from .unet import KarloUNetArch


@dataclass(frozen=True)
class KarloPriorArch:
    """Karlo ``PriorTransformer`` hyper-parameters (names as in Karlo's ``prior_*.yaml``)."""

    text_ctx: int
    xf_width: int
    xf_layers: int
    xf_heads: int
    clip_dim: int
    notes: tuple[str, ...] = ()

    @property
    def head_dim(self) -> int:
        return self.xf_width // self.xf_heads

    def diffusers_config(self) -> dict[str, Any]:
        return {
            "num_attention_heads": self.xf_heads,
            "attention_head_dim": self.head_dim,
            "num_layers": self.xf_layers,
            "embedding_dim": self.clip_dim,
            "num_embeddings": self.text_ctx,
            "additional_embeddings": PRIOR_EXTRA_TOKENS,
            "dropout": 0.0,
            "time_embed_act_fn": "silu",
            "norm_in_type": None,
            "embedding_proj_norm_type": None,
            "encoder_hid_proj_type": "linear",
            "added_emb_type": "prd",
            "time_embed_dim": None,
            "embedding_proj_dim": None,
            "clip_embed_dim": None,
        }


def infer_prior_arch(state_dict: Mapping, config=None, *, num_heads: int | None = None) -> KarloPriorArch:
    """Read the prior's sizes from its tensors; heads from ``num_heads``, the config's ``xf_heads``, or 32."""
    what = "prior checkpoint"
    p = PRIOR_PREFIX
    _require(state_dict, [f"{p}.positional_embedding", f"{p}.clip_img_proj.weight"], what)
    positional = state_dict[f"{p}.positional_embedding"]
    if positional.dim() != 3 or positional.shape[0] != 1 or positional.shape[1] <= PRIOR_EXTRA_TOKENS:
        raise ConversionError(
            f"{what}: {p}.positional_embedding has shape {tuple(positional.shape)}; Karlo's is "
            f"(1, text_ctx + {PRIOR_EXTRA_TOKENS}, xf_width)."
        )
    text_ctx, width = positional.shape[1] - PRIOR_EXTRA_TOKENS, positional.shape[2]
    clip_dim = state_dict[f"{p}.clip_img_proj.weight"].shape[1]
    layers = _count_indices(state_dict, f"{p}.transformer.resblocks.")
    if f"{p}.final_ln.weight" not in state_dict:
        raise ConversionError(
            f"{what}: no {p}.final_ln — the prior was built with xf_final_ln: false, which diffusers' PriorTransformer "
            "cannot represent (it always applies norm_out). Not supported."
        )
    hp = _hparams(config)
    if config is not None:
        shapes = f"{p}.positional_embedding {tuple(positional.shape)}"
        for key, value, evidence in (
            ("text_ctx", text_ctx, shapes),
            ("xf_width", width, shapes),
            ("xf_layers", layers, f"{p}.transformer.resblocks.0..{layers - 1}"),
            ("clip_dim", clip_dim, f"{p}.clip_img_proj.weight"),
            ("xf_final_ln", True, f"{p}.final_ln present"),
        ):
            if key in hp:
                _agree("prior config", key, hp[key], value, evidence)
    notes = [f"text_ctx={text_ctx}, xf_width={width}, xf_layers={layers}, clip_dim={clip_dim} (from tensor shapes)"]
    heads = _pick(
        "prior attention heads",
        num_heads,
        "--prior_num_heads",
        hp.get("xf_heads"),
        "xf_heads",
        KARLO_PRIOR_NUM_HEADS,
        notes,
    )
    if not isinstance(heads, int) or heads <= 0 or width % heads:
        raise ConversionError(
            f"prior: xf_width={width} is not divisible by {heads} attention heads (xf_heads / --prior_num_heads)."
        )
    return KarloPriorArch(text_ctx, width, layers, heads, clip_dim, tuple(notes))


def _prior_rules(arch: KarloPriorArch) -> list[Rule]:
    p, t = PRIOR_PREFIX, "prior"
    w, c = arch.xf_width, arch.clip_dim
    ww = f"xf_width={w}"
    wc = f"xf_width={w}, clip_dim={c}"
    rules = [
        *_linear(t, f"{p}.time_embed.0", "time_embedding.linear_1", w, w, ww),
        *_linear(t, f"{p}.time_embed.2", "time_embedding.linear_2", w, w, ww),
        *_linear(t, f"{p}.text_enc_proj", "encoder_hidden_states_proj", c, w, wc),
        *_linear(t, f"{p}.text_emb_proj", "embedding_proj", c, w, wc),
        *_linear(t, f"{p}.clip_img_proj", "proj_in", c, w, wc),
        *_linear(t, f"{p}.out_proj", "proj_to_clip_embeddings", w, c, wc),
        _copy(
            t,
            f"{p}.positional_embedding",
            "positional_embedding",
            (1, arch.text_ctx + PRIOR_EXTRA_TOKENS, w),
            f"text_ctx={arch.text_ctx} + {PRIOR_EXTRA_TOKENS}, {ww}",
        ),
        _copy(t, f"{p}.prd_emb", "prd_embedding", (1, 1, w), ww),
        *_norm(t, f"{p}.final_ln", "norm_out", w, ww),
    ]
    for i in range(arch.xf_layers):
        src, dst = f"{p}.transformer.resblocks.{i}", f"transformer_blocks.{i}"
        rules += [
            _fused_heads(
                t,
                f"{src}.attn.c_qkv",
                [f"{dst}.attn1.to_q", f"{dst}.attn1.to_k", f"{dst}.attn1.to_v"],
                w,
                w,
                arch.head_dim,
                f"{ww} (q, k, v interleaved per head of {arch.head_dim})",
                conv1d=False,
            ),
            *_linear(t, f"{src}.attn.c_proj", f"{dst}.attn1.to_out.0", w, w, ww),
            *_norm(t, f"{src}.ln_1", f"{dst}.norm1", w, ww),
            *_norm(t, f"{src}.ln_2", f"{dst}.norm3", w, ww),
            *_linear(t, f"{src}.mlp.c_fc", f"{dst}.ff.net.0.proj", w, 4 * w, f"{ww} (MLP 4 × xf_width)"),
            *_linear(t, f"{src}.mlp.c_proj", f"{dst}.ff.net.2", 4 * w, w, f"{ww} (MLP 4 × xf_width)"),
        ]
    return rules


def convert_prior(
    state_dict: Mapping,
    clip_mean: torch.Tensor,
    clip_std: torch.Tensor,
    *,
    config=None,
    num_heads: int | None = None,
    copy_tensors: bool = True,
):
    """
    Karlo prior ``state_dict`` + CLIP stats → ``(PriorTransformer, KarloPriorArch)``. With ``copy_tensors=False``
    the model may share memory with ``state_dict`` (halves peak memory on real checkpoints).
    """
    from diffusers import PriorTransformer

    config = load_karlo_config(config)
    arch = infer_prior_arch(state_dict, config, num_heads=num_heads)
    converted = apply_rules(
        state_dict, _prior_rules(arch), "prior checkpoint", context=_arch_context(arch), copy=copy_tensors
    )
    prior_state = converted["prior"]
    clip_mean, clip_std = clip_mean.reshape(-1), clip_std.reshape(-1)
    for name, stat in (("mean", clip_mean), ("std", clip_std)):
        if stat.shape != (arch.clip_dim,):
            raise ConversionError(
                f"CLIP stats: the {name} has {stat.numel()} entries but the prior's clip_dim is {arch.clip_dim} "
                "(from model.clip_img_proj.weight); use the stats of the CLIP model the prior was trained with."
            )
    prior_state["clip_mean"] = clip_mean.reshape(1, -1).to(torch.float32).clone()
    prior_state["clip_std"] = clip_std.reshape(1, -1).to(torch.float32).clone()
    model = load_into_model(_empty_model(PriorTransformer, arch.diffusers_config()), prior_state, "prior")
    return model.eval(), arch


def _arch_context(arch) -> str:
    fields = {k: v for k, v in arch.__dict__.items() if k != "notes" and not isinstance(v, KarloUNetArch)}
    return " (" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"
