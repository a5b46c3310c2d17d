"""
Building blocks shared by the native ports of lucidrains' DALLE2-pytorch networks.

Every block keeps the module tree (attribute names and ``nn.Sequential`` indices) of DALLE2-pytorch 1.15.6, so that a
1.x state dict maps onto the ports almost one to one, and takes *semantic switches* for the behaviour that changed
between releases without changing parameter names (see :mod:`unclip_pipelines.conversion.dalle2.versions` for which
release did what). Only inference is ported: dropout is kept as a module for the record, and the training-time
random condition dropping is replaced by explicit boolean masks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: how attention logits are scaled, by generation of DALLE2-pytorch:
#:  - ``plain``: ``q * dim_head**-0.5`` then ``q·k`` (0.x up to 0.16.0);
#:  - ``pb_relax``: the same with PB-relax (``q`` divided by ``alpha``, logits shifted by their max then multiplied
#:    by ``alpha``), which also multiplies the relative position bias by ``alpha`` (0.16.1 to 1.4.2 for
#:    self-attention, 0.16.1 to 1.2.x for cross-attention);
#:  - ``cosine_sim``: l2-normalised ``q`` and ``k`` times ``cosine_sim_scale`` (16) (1.4.3 on for the prior; an
#:    option of the U-Net from 1.4.0);
#:  - ``scaled``: ``q`` and ``k`` each multiplied by ``sqrt(scale)`` (1.4.x on when cosine similarity is off). The
#:    self-attention of that generation also multiplies ``q`` by the scale beforehand, so its logits are scaled by
#:    ``dim_head**-1`` (``double_scaled``).
ATTENTION_TYPES = ("plain", "pb_relax", "cosine_sim", "scaled", "double_scaled")
#: how DALLE2-pytorch's layer norms compute:
#:  - ``functional``: ``F.layer_norm`` with a gain ``gamma`` and a (zero) ``beta`` buffer (0.x up to 0.15.x);
#:  - ``gain``: mean/variance by hand, a gain ``g`` and no bias (0.16.0 on).
LAYER_NORM_TYPES = ("functional", "gain")
#: which layer norms divide their input by its (detached) maximum first ("stable" layer norm):
#: ``none`` (up to 0.16.1), ``all`` (0.16.2 to 0.23.2), ``final`` (only the prior's output norm, 0.23.3 on).
LAYER_NORM_STABLE = ("none", "all", "final")


def check_choice(value, choices, name: str) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def l2norm(t: torch.Tensor) -> torch.Tensor:
    return F.normalize(t, dim=-1)


class LayerNorm(nn.Module):
    """
    DALLE2-pytorch's ``LayerNorm`` (``channel_first=False``) and ``ChanLayerNorm`` (``channel_first=True``).

    ``kind="functional"`` is the 0.15.x norm (``gamma`` and a ``beta`` buffer, ``F.layer_norm``); ``kind="gain"``
    the later one (``g`` only), optionally ``stable`` (input divided by its max first). ``half_eps`` is the epsilon
    used for non-float32 inputs (1.4.1 on: 1e-3); ``sqrt_divide`` reproduces the 0.15.x channel norm, which divides
    by ``sqrt(var + eps)`` instead of multiplying by ``rsqrt``.
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: str = "gain",
        stable: bool = False,
        channel_first: bool = False,
        eps: float = 1e-5,
        half_eps: float | None = None,
        sqrt_divide: bool = False,
    ):
        super().__init__()
        check_choice(kind, LAYER_NORM_TYPES, "kind")
        if kind == "functional" and (channel_first or stable):
            raise ValueError("the functional layer norm is neither channel-first nor stable")
        self.kind, self.stable, self.channel_first = kind, stable, channel_first
        self.eps, self.half_eps, self.sqrt_divide = eps, half_eps, sqrt_divide
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1) if channel_first else torch.ones(dim))
        if kind == "functional":
            self.register_buffer("b", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "functional":
            return F.layer_norm(x, x.shape[-1:], self.g, self.b, self.eps)
        eps = self.eps if (x.dtype == torch.float32 or self.half_eps is None) else self.half_eps
        dim = 1 if self.channel_first else -1
        if self.stable:
            x = x / x.amax(dim=dim, keepdim=True).detach()
        var = torch.var(x, dim=dim, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=dim, keepdim=True)
        if self.sqrt_divide:
            return (x - mean) / (var + eps).sqrt() * self.g
        return (x - mean) * (var + eps).rsqrt() * self.g


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(x, **kwargs) + x


class ToSequence(nn.Module):
    """Runs ``fn`` on a feature map as a sequence: ``(b, c, h, w) -> (b, h*w, c) -> fn -> (b, c, h, w)``."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b, c, h * w).transpose(1, 2)
        x = self.fn(x)
        return x.transpose(1, 2).reshape(b, c, h, w)


class SplitTokens(nn.Module):
    """``(b, n*d) -> (b, n, d)`` (einops' ``Rearrange('b (n d) -> b n d')``)."""

    def __init__(self, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.num_tokens, -1)


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype if x.is_floating_point() else torch.float32
        half_dim = self.dim // 2
        step = math.log(10000) / (half_dim - 1)
        freqs = torch.exp(torch.arange(half_dim, device=x.device, dtype=dtype) * -step)
        emb = x.to(dtype)[:, None] * freqs[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1).to(dtype)


class MLP(nn.Module):
    """The prior's continuous-time MLP (``net.{0.0, 1.0, ..., depth}``), computed in float32 as the source does."""

    def __init__(self, dim_in: int, dim_out: int, *, expansion_factor: float = 2.0, depth: int = 2):
        super().__init__()
        hidden = int(expansion_factor * dim_out)
        layers = [nn.Sequential(nn.Linear(dim_in, hidden), nn.SiLU(), nn.Identity())]
        for _ in range(depth - 1):
            layers.append(nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Identity()))
        layers.append(nn.Linear(hidden, dim_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


class RotaryEmbedding(nn.Module):
    """
    Rotary position embedding as applied by ``rotary_embedding_torch.RotaryEmbedding.rotate_queries_or_keys``: the
    first ``2 * len(freqs)`` features are rotated in interleaved pairs by ``position * freq``. The frequencies are
    stored in the checkpoints (``rotary_emb.freqs``), so they are a persistent buffer here.
    """

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.register_buffer("freqs", freqs)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        seq_len = t.shape[-2]
        positions = torch.arange(seq_len, device=t.device, dtype=t.dtype)
        angles = positions.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        angles = angles.repeat_interleave(2, dim=-1)
        rot_dim = angles.shape[-1]
        t_rot, t_pass = t[..., :rot_dim], t[..., rot_dim:]
        pairs = t_rot.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        out = t_rot * angles.cos() + rotated * angles.sin()
        return torch.cat((out, t_pass), dim=-1).to(t.dtype)


class RelPosBias(nn.Module):
    """T5-style bucketed relative position bias of the prior (32 buckets, max distance 128)."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def _bucket(self, relative_position: torch.Tensor) -> torch.Tensor:
        n = torch.clamp(-relative_position, min=0)
        max_exact = self.num_buckets // 2
        is_small = n < max_exact
        large = max_exact + (
            torch.log(n.float() / max_exact) / math.log(self.max_distance / max_exact) * (self.num_buckets - max_exact)
        ).long()
        large = torch.clamp(large, max=self.num_buckets - 1)
        return torch.where(is_small, n, large)

    def forward(self, i: int, j: int, *, device) -> torch.Tensor:
        q_pos = torch.arange(i, dtype=torch.long, device=device)
        k_pos = torch.arange(j, dtype=torch.long, device=device)
        buckets = self._bucket(k_pos[None, :] - q_pos[:, None])
        return self.relative_attention_bias(buckets).permute(2, 0, 1)


def _scale_logits(q, k, attention_type, scale, dim_head, pb_relax_alpha):
    """Scales ``q`` / ``k`` before the dot product, the way each generation did (after null keys were added)."""
    if attention_type == "cosine_sim":
        q, k = l2norm(q), l2norm(k)
    if attention_type in ("cosine_sim", "scaled", "double_scaled"):
        q, k = q * math.sqrt(scale), k * math.sqrt(scale)
    return q, k


class Attention(nn.Module):
    """
    DALLE2-pytorch's ``Attention``: multi-query (one shared key/value head of ``dim_head``), a learned null
    key/value prepended, optional rotary embedding and causal mask, pre-norm and a norm after the output
    projection, no biases. Used by the prior's causal transformer and as the U-Net's full self-attention.
    """

    def __init__(
        self,
        dim: int,
        *,
        dim_head: int = 64,
        heads: int = 8,
        dropout: float = 0.0,
        causal: bool = False,
        rotary_dim: int | None = None,
        attention_type: str = "cosine_sim",
        pb_relax_alpha: float = 128.0,
        cosine_sim_scale: float = 16.0,
        norm_kwargs: dict | None = None,
    ):
        super().__init__()
        check_choice(attention_type, ATTENTION_TYPES, "attention_type")
        norm_kwargs = norm_kwargs or {}
        self.heads, self.dim_head, self.causal = heads, dim_head, causal
        self.attention_type, self.pb_relax_alpha = attention_type, pb_relax_alpha
        self.scale = cosine_sim_scale if attention_type == "cosine_sim" else dim_head**-0.5
        inner_dim = dim_head * heads
        self.norm = LayerNorm(dim, **norm_kwargs)
        self.dropout = nn.Dropout(dropout)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * 2, bias=False)
        self.rotary_emb = RotaryEmbedding(rotary_dim) if rotary_dim else None
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim, bias=False), LayerNorm(dim, **norm_kwargs))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, attn_bias: torch.Tensor | None = None):
        b, n = x.shape[:2]
        x = self.norm(x)
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q = q.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)

        if self.attention_type == "pb_relax":
            q = q * (self.scale / self.pb_relax_alpha)
        elif self.attention_type != "scaled":
            q = q * self.scale

        if self.rotary_emb is not None:
            q, k = self.rotary_emb(q), self.rotary_emb(k)

        nk, nv = (t.reshape(1, 1, -1).expand(b, 1, -1) for t in self.null_kv.unbind(dim=-2))
        k = torch.cat((nk, k), dim=-2)
        v = torch.cat((nv, v), dim=-2)
        q, k = _scale_logits(q, k, self.attention_type, self.scale, self.dim_head, self.pb_relax_alpha)

        sim = torch.einsum("bhid,bjd->bhij", q, k)
        if attn_bias is not None:
            sim = sim + attn_bias
        max_neg = -torch.finfo(sim.dtype).max
        if mask is not None:
            mask = F.pad(mask, (1, 0), value=True)
            sim = sim.masked_fill(~mask[:, None, None, :], max_neg)
        if self.causal:
            i, j = sim.shape[-2:]
            causal_mask = torch.ones((i, j), dtype=torch.bool, device=x.device).triu(j - i + 1)
            sim = sim.masked_fill(causal_mask, max_neg)
        if self.attention_type == "pb_relax":
            sim = sim - sim.amax(dim=-1, keepdim=True).detach()
            sim = sim * self.pb_relax_alpha

        attn = sim.softmax(dim=-1, dtype=torch.float32).to(sim.dtype)
        attn = self.dropout(attn)
        out = torch.einsum("bhij,bjd->bhid", attn, v)
        out = out.transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class CrossAttention(nn.Module):
    """
    DALLE2-pytorch's ``CrossAttention`` of the U-Net's resnet blocks: ``heads`` full heads (8 × 64 in every
    release), a learned null key/value per head, pre-norm, a norm after the output projection, no biases.
    """

    def __init__(
        self,
        dim: int,
        *,
        context_dim: int | None = None,
        dim_head: int = 64,
        heads: int = 8,
        dropout: float = 0.0,
        attention_type: str = "scaled",
        pb_relax_alpha: float = 1024.0,
        cosine_sim_scale: float = 16.0,
        norm_kwargs: dict | None = None,
    ):
        super().__init__()
        check_choice(attention_type, ("plain", "pb_relax", "cosine_sim", "scaled"), "cross attention_type")
        norm_kwargs = norm_kwargs or {}
        context_dim = context_dim or dim
        self.heads, self.dim_head = heads, dim_head
        self.attention_type, self.pb_relax_alpha = attention_type, pb_relax_alpha
        self.scale = cosine_sim_scale if attention_type == "cosine_sim" else dim_head**-0.5
        inner_dim = dim_head * heads
        self.norm = LayerNorm(dim, **norm_kwargs)
        self.dropout = nn.Dropout(dropout)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(context_dim, inner_dim * 2, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim, bias=False), LayerNorm(dim, **norm_kwargs))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n = x.shape[:2]
        x = self.norm(x)
        q = self.to_q(x)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        nk, nv = (t.reshape(1, 1, 1, -1).expand(b, self.heads, 1, -1) for t in self.null_kv.unbind(dim=-2))
        k = torch.cat((nk, k), dim=-2)
        v = torch.cat((nv, v), dim=-2)

        if self.attention_type == "plain":
            q = q * self.scale
        elif self.attention_type == "pb_relax":
            q = q * (self.scale / self.pb_relax_alpha)
        else:
            q, k = _scale_logits(q, k, self.attention_type, self.scale, self.dim_head, self.pb_relax_alpha)

        sim = torch.einsum("bhid,bhjd->bhij", q, k)
        if mask is not None:
            mask = F.pad(mask, (1, 0), value=True)
            sim = sim.masked_fill(~mask[:, None, None, :], -torch.finfo(sim.dtype).max)
        if self.attention_type == "pb_relax":
            sim = sim - sim.amax(dim=-1, keepdim=True).detach()
            sim = sim * self.pb_relax_alpha
        attn = sim.softmax(dim=-1, dtype=torch.float32).to(sim.dtype)
        out = torch.einsum("bhij,bhjd->bhid", attn, v)
        out = out.transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


#: how the linear attention normalises its values: ``none`` (up to 1.1.x), ``divide`` (by the number of pixels,
#: 1.2.x), ``l2norm`` (l2-normalised, then keys and values divided by ``sqrt(pixels)``, 1.4.0 on)
LINEAR_ATTENTION_VALUE_NORMS = ("none", "divide", "l2norm")


class LinearAttention(nn.Module):
    """DALLE2-pytorch's ``LinearAttention`` (the U-Net's ``sparse_attn``): softmax-kernel attention over pixels."""

    def __init__(
        self, dim: int, *, dim_head: int = 32, heads: int = 8, value_norm: str = "l2norm", norm_kwargs=None
    ):
        super().__init__()
        check_choice(value_norm, LINEAR_ATTENTION_VALUE_NORMS, "value_norm")
        norm_kwargs = {**(norm_kwargs or {}), "channel_first": True}
        self.scale, self.heads, self.dim_head, self.value_norm = dim_head**-0.5, heads, dim_head, value_norm
        inner_dim = dim_head * heads
        self.norm = LayerNorm(dim, **norm_kwargs)
        self.nonlin = nn.GELU()
        self.to_qkv = nn.Conv2d(dim, inner_dim * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(inner_dim, dim, 1, bias=False), LayerNorm(dim, **norm_kwargs))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        b, _, x, y = fmap.shape
        h, seq_len = self.heads, x * y
        fmap = self.norm(fmap)
        q, k, v = self.to_qkv(fmap).chunk(3, dim=1)
        # 'b (h c) x y -> (b h) (x y) c'
        q, k, v = (t.reshape(b * h, -1, seq_len).transpose(1, 2) for t in (q, k, v))
        q = q.softmax(dim=-1)
        k = k.softmax(dim=-2)
        q = q * self.scale
        if self.value_norm == "divide":
            v = v / seq_len
        elif self.value_norm == "l2norm":
            v = l2norm(v)
            k, v = k / math.sqrt(seq_len), v / math.sqrt(seq_len)
        context = torch.einsum("bnd,bne->bde", k, v)
        out = torch.einsum("bnd,bde->bne", q, context)
        # '(b h) (x y) d -> b (h d) x y'
        out = out.transpose(1, 2).reshape(b, -1, x, y)
        out = self.nonlin(out)
        return self.to_out(out)
