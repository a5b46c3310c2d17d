"""
Building blocks of the key-mapping tables: one :class:`~unclip_pipelines.conversion.common.Rule` per Karlo layer
(copy, Linear, norm, conv, fused per-head projections), the per-head de-interleave, and empty target models.
"""

from __future__ import annotations

import torch

from ..common import ConversionError, Rule


def deinterleave_heads(tensor: torch.Tensor, parts: int, head_dim: int) -> list[torch.Tensor]:
    """
    Split rows laid out per head as ``[head 0: part 0, part 1, ..; head 1: part 0, ..]`` (Karlo's fused ``qkv`` /
    ``encoder_kv``, each part ``head_dim`` rows) into one tensor per part, heads in order.
    """
    rows = tensor.shape[0]
    if rows % (parts * head_dim):
        raise ConversionError(f"cannot split {rows} rows into {parts} parts of heads of {head_dim} channels")
    heads = rows // (parts * head_dim)
    grouped = tensor.reshape(heads, parts, head_dim, *tensor.shape[1:])
    return [grouped[:, part].reshape(heads * head_dim, *tensor.shape[1:]) for part in range(parts)]


def _copy(target, src, dst, shape, why, hint=None) -> Rule:
    return Rule(target, {src: (tuple(shape), why)}, lambda t: {dst: t[src]}, {src: hint} if hint else {})


def _linear(target, src, dst, n_in, n_out, why) -> list[Rule]:
    return [
        _copy(target, f"{src}.weight", f"{dst}.weight", (n_out, n_in), why),
        _copy(target, f"{src}.bias", f"{dst}.bias", (n_out,), why),
    ]


def _norm(target, src, dst, channels, why) -> list[Rule]:
    return [
        _copy(target, f"{src}.weight", f"{dst}.weight", (channels,), why),
        _copy(target, f"{src}.bias", f"{dst}.bias", (channels,), why),
    ]


def _conv(target, src, dst, c_in, c_out, kernel, why) -> list[Rule]:
    return [
        _copy(target, f"{src}.weight", f"{dst}.weight", (c_out, c_in, kernel, kernel), why),
        _copy(target, f"{src}.bias", f"{dst}.bias", (c_out,), why),
    ]


def _fused_heads(target, src, dsts, n_in, channels, head_dim, why, *, conv1d: bool) -> Rule:
    """A fused projection with rows interleaved per head (Linear, or Conv1d of kernel 1) → one Linear per part."""
    parts = len(dsts)
    rows = parts * channels

    def build(t):
        weight = t[f"{src}.weight"]
        if conv1d:
            weight = weight[:, :, 0]
        weights = deinterleave_heads(weight, parts, head_dim)
        biases = deinterleave_heads(t[f"{src}.bias"], parts, head_dim)
        out = {}
        for dst, w, b in zip(dsts, weights, biases, strict=True):
            out[f"{dst}.weight"], out[f"{dst}.bias"] = w, b
        return out

    weight_shape = (rows, n_in, 1) if conv1d else (rows, n_in)
    return Rule(target, {f"{src}.weight": (weight_shape, why), f"{src}.bias": ((rows,), why)}, build)


def _empty_model(cls, config: dict):
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return cls(**config)
