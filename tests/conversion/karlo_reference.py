"""
A functional re-statement of what Karlo's networks compute, reading Karlo-named state dicts.

Written from the behaviour of ``karlo/modules/xf.py`` and ``karlo/modules/unet.py`` (GLIDE / guided-diffusion
style), not from diffusers, so comparing it with the converted diffusers models checks the *meaning* of the key
mapping (head interleaving, token order, masks, scale-shift, skip order), which a round trip alone cannot.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sinusoidal(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Karlo's timestep features: cos then sin of t · 10000^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _Weights:
    def __init__(self, state: dict[str, torch.Tensor], prefix: str):
        self.state, self.prefix = state, prefix

    def __call__(self, name: str) -> torch.Tensor:
        return self.state[f"{self.prefix}.{name}"]

    def has(self, name: str) -> bool:
        return f"{self.prefix}.{name}" in self.state

    def linear(self, x, name):
        return F.linear(x, self(f"{name}.weight"), self(f"{name}.bias"))

    def layer_norm(self, x, name):
        return F.layer_norm(x, x.shape[-1:], self(f"{name}.weight"), self(f"{name}.bias"), eps=1e-5)

    def group_norm(self, x, name):
        return F.group_norm(x, 32, self(f"{name}.weight"), self(f"{name}.bias"), eps=1e-5)

    def conv(self, x, name):
        weight = self(f"{name}.weight")
        if weight.dim() == 3:
            return F.conv1d(x, weight, self(f"{name}.bias"))
        return F.conv2d(x, weight, self(f"{name}.bias"), padding=weight.shape[-1] // 2)


# --------------------------------------------------------------------------------------------------------------------
# prior


def prior_forward(state, *, heads, x, timesteps, text_emb, text_enc, mask):
    """Karlo ``PriorTransformer.forward`` (x0 prediction of the normalised image embedding)."""
    w = _Weights(state, "model")
    batch = x.shape[0]
    width = w("positional_embedding").shape[-1]
    head_dim = width // heads
    t_emb = w.linear(F.silu(w.linear(sinusoidal(timesteps, width), "time_embed.0")), "time_embed.2")
    tokens = torch.cat(
        [
            w.linear(text_enc, "text_enc_proj"),
            w.linear(text_emb, "text_emb_proj")[:, None],
            t_emb[:, None],
            w.linear(x, "clip_img_proj")[:, None],
            w("prd_emb").expand(batch, -1, -1),
        ],
        dim=1,
    ) + w("positional_embedding")
    n = tokens.shape[1]
    keys_ok = torch.cat([mask, torch.ones(batch, n - mask.shape[1], dtype=torch.bool)], dim=1)
    bias = torch.zeros(batch, n, n).masked_fill(~keys_ok[:, None, :], float("-inf"))
    bias = bias + torch.full((n, n), float("-inf")).triu(1)
    layer = 0
    while w.has(f"transformer.resblocks.{layer}.ln_1.weight"):
        p = f"transformer.resblocks.{layer}"
        h = w.layer_norm(tokens, f"{p}.ln_1")
        q, k, v = w.linear(h, f"{p}.attn.c_qkv").view(batch, n, heads, 3, head_dim).unbind(dim=3)
        logits = torch.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(head_dim) + bias[:, None]
        attended = torch.einsum("bhqk,bkhc->bqhc", logits.softmax(-1), v).reshape(batch, n, width)
        tokens = tokens + w.linear(attended, f"{p}.attn.c_proj")
        h = w.layer_norm(tokens, f"{p}.ln_2")
        tokens = tokens + w.linear(F.gelu(w.linear(h, f"{p}.mlp.c_fc")), f"{p}.mlp.c_proj")
        layer += 1
    tokens = w.layer_norm(tokens, "final_ln")
    return w.linear(tokens[:, -1], "out_proj")


# --------------------------------------------------------------------------------------------------------------------
# UNets


def unet_forward(
    state,
    prefix,
    *,
    levels,
    num_res_blocks,
    head_channels,
    x,
    timesteps,
    extra_emb=None,
    context=None,
    context_bias=None,
):
    """Karlo ``UNetModel.forward`` with optional CLIP conditioning (``PLMImUNet``): ``context`` is (B, C_xf, L)."""
    w = _Weights(state, prefix)
    model_channels = w("time_embed.0.weight").shape[1]
    emb = w.linear(F.silu(w.linear(sinusoidal(timesteps, model_channels), "time_embed.0")), "time_embed.2")
    if extra_emb is not None:
        emb = emb + extra_emb

    def resblock(h, name, resample=None):
        a = F.silu(w.group_norm(h, f"{name}.in_layers.0"))
        if resample == "down":
            a, h = F.avg_pool2d(a, 2), F.avg_pool2d(h, 2)
        elif resample == "up":
            a, h = F.interpolate(a, scale_factor=2, mode="nearest"), F.interpolate(h, scale_factor=2, mode="nearest")
        a = w.conv(a, f"{name}.in_layers.2")
        e = w.linear(F.silu(emb), f"{name}.emb_layers.1")[:, :, None, None]
        if e.shape[1] == 2 * a.shape[1]:
            scale, shift = e.chunk(2, dim=1)
            a = F.silu(w.group_norm(a, f"{name}.out_layers.0") * (1 + scale) + shift)
        else:
            a = F.silu(w.group_norm(a + e, f"{name}.out_layers.0"))
        a = w.conv(a, f"{name}.out_layers.3")
        skip = w.conv(h, f"{name}.skip_connection") if w.has(f"{name}.skip_connection.weight") else h
        return skip + a

    def attention(h, name):
        batch, channels, height, width = h.shape
        heads = channels // head_channels
        flat = w.group_norm(h, f"{name}.norm").reshape(batch, channels, -1)
        q, k, v = w.conv(flat, f"{name}.qkv").view(batch, heads, 3, head_channels, -1).unbind(dim=2)
        ek, ev = w.conv(context, f"{name}.encoder_kv").view(batch, heads, 2, head_channels, -1).unbind(dim=2)
        k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
        logits = torch.einsum("bhcq,bhck->bhqk", q, k) / math.sqrt(head_channels)
        bias = torch.cat([context_bias, torch.zeros(batch, flat.shape[-1])], dim=1)
        logits = logits + bias[:, None, None, :]
        out = torch.einsum("bhqk,bhck->bhcq", logits.softmax(-1), v).reshape(batch, channels, -1)
        return h + w.conv(out, f"{name}.proj_out").reshape(batch, channels, height, width)

    h = w.conv(x, "input_blocks.0.0")
    skips, k = [h], 1
    for level in range(levels):
        for _ in range(num_res_blocks):
            h = resblock(h, f"input_blocks.{k}.0")
            if w.has(f"input_blocks.{k}.1.qkv.weight"):
                h = attention(h, f"input_blocks.{k}.1")
            skips.append(h)
            k += 1
        if level != levels - 1:
            h = resblock(h, f"input_blocks.{k}.0", "down")
            skips.append(h)
            k += 1
    h = resblock(h, "middle_block.0")
    last = 1
    if w.has("middle_block.1.qkv.weight"):
        h, last = attention(h, "middle_block.1"), 2
    h = resblock(h, f"middle_block.{last}")
    k = 0
    for level in reversed(range(levels)):
        for i in range(num_res_blocks + 1):
            h = resblock(torch.cat([h, skips.pop()], dim=1), f"output_blocks.{k}.0")
            sub = 1
            if w.has(f"output_blocks.{k}.1.qkv.weight"):
                h, sub = attention(h, f"output_blocks.{k}.1"), 2
            if level and i == num_res_blocks:
                h = resblock(h, f"output_blocks.{k}.{sub}", "up")
            k += 1
    return w.conv(F.silu(w.group_norm(h, "out.0")), "out.2")


def decoder_forward(state, *, levels, num_res_blocks, head_channels, x, timesteps, image_emb, text_emb, text_enc, mask):
    """Karlo ``PLMImUNet.forward``: CLIP image embedding ``y``, pooled text ``txt_feat``, text states + mask."""
    w = _Weights(state, "model")
    batch = x.shape[0]
    extra_emb = w.linear(image_emb, "clip_emb") + w.linear(text_emb, "text_feat_proj")
    text_tokens = w.layer_norm(w.linear(text_enc, "text_seq_proj.0"), "text_seq_proj.1").permute(0, 2, 1)
    xf_width = text_tokens.shape[1]
    image_tokens = w.linear(image_emb, "clip_tok_proj").reshape(batch, xf_width, -1)  # channel-major, as Karlo
    context = torch.cat([image_tokens, text_tokens], dim=2)
    keys_ok = torch.cat([torch.ones(batch, image_tokens.shape[2], dtype=torch.bool), mask], dim=1)
    context_bias = torch.zeros(batch, keys_ok.shape[1]).masked_fill(~keys_ok, float("-inf"))
    return unet_forward(
        state,
        "model",
        levels=levels,
        num_res_blocks=num_res_blocks,
        head_channels=head_channels,
        x=x,
        timesteps=timesteps,
        extra_emb=extra_emb,
        context=context,
        context_bias=context_bias,
    )


def super_res_forward(state, prefix, *, levels, num_res_blocks, x, low_res, timesteps):
    """Karlo ``SuperResUNetModel.forward``: the noisy image and the upsampled low-res image, channel-concatenated."""
    return unet_forward(
        state,
        prefix,
        levels=levels,
        num_res_blocks=num_res_blocks,
        head_channels=1,
        x=torch.cat([x, low_res], dim=1),
        timesteps=timesteps,
    )
