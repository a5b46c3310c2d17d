"""Reading one DALLE2-pytorch ``Unet``'s architecture from its weights (the config of a
:class:`~unclip_pipelines.models.dalle2.Dalle2UNet`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..common import ConversionError
from .config import _Resolver
from .rules import _count_indices


def _unet_why(key: str, cfg: dict) -> str:
    rules = [
        (r"cross_attn\.to_q", "cross-attention of 8 heads × 64 on the stage width"),
        (r"cross_attn\.to_kv", f"cond_dim={cfg['cond_dim']} → 2 × 8 heads × 64"),
        (r"(mid_attn|\.3\.fn\.fn|\.2\.fn\.fn)\.to_q", f"attn_heads={cfg['attn_heads']} × attn_dim_head={cfg['attn_dim_head']}"),
        (r"\.null_kv$", f"attn_dim_head={cfg['attn_dim_head']} (self-attention) or 64 (cross-attention)"),
        (r"to_qkv", f"3 × attn_heads={cfg['attn_heads']} × attn_dim_head={cfg['attn_dim_head']} (sparse_attn)"),
        (r"^to_time", f"dim={cfg['dim']} (time features 4 × dim), cond_dim={cfg['cond_dim']}"),
        (r"^image_to_tokens|^null_image_embed", f"num_image_tokens={cfg['num_image_tokens']} × cond_dim={cfg['cond_dim']}, image_embed_dim={cfg['image_embed_dim']}"),
        (r"^null_text_embed", f"max_text_len={cfg['max_text_len']}, cond_dim={cfg['cond_dim']}"),
        (r"^text_to_cond", f"text_embed_dim={cfg['text_embed_dim']} → cond_dim={cfg['cond_dim']}"),
        (r"^init_conv", f"init_dim / kernel sizes {cfg['init_cross_embed_kernel_sizes']}, in_channels={cfg['in_channels']} × (1 + lowres_cond + self_cond)"),
        (r"^to_out", f"out_channels={cfg['out_channels']} (learned variance doubles it), dim={cfg['dim']}"),
    ]
    for pattern, text in rules:
        if re.search(pattern, key):
            return text
    return f"dim={cfg['dim']}, dim_mults={tuple(cfg['dim_mults'])}, num_resnet_blocks={cfg['num_resnet_blocks']}"


def _infer_unet_config(u: int, unet: Mapping, semantics, unet_cfg: Mapping, decoder_cfg: Mapping, notes: list[str]) -> dict:
    what = f"DALLE2-pytorch decoder unet {u + 1}"
    r = _Resolver(what, unet_cfg, notes, f"unets[{u}].")
    keys = set(unet)
    required = ["to_time_hiddens.1.weight", "norm_cond.weight", "to_time_tokens.0.weight", "to_out.weight", "null_text_embed"]
    missing = [k for k in required if k not in unet]
    if missing:
        raise ConversionError(f"{what}: cannot read the architecture, the checkpoint lacks {[f'unets.{u}.' + k for k in missing]}.")
    if any(k.startswith("upsample_combiner.") for k in keys):
        raise ConversionError(f"{what}: combine_upsample_fmaps=True is not supported (its resize_right resampling is not ported).")

    dim = r.inferred("dim", int(unet["to_time_hiddens.1.weight"].shape[1]), "to_time_hiddens.1 columns")
    cond_dim = r.inferred("cond_dim", int(unet["norm_cond.weight"].shape[0]), "norm_cond")
    num_time_tokens = r.inferred("num_time_tokens", int(unet["to_time_tokens.0.weight"].shape[0]) // cond_dim, "to_time_tokens.0 rows ÷ cond_dim")
    num_image_tokens = r.inferred("num_image_tokens", int(unet["null_image_embed"].shape[1]), "null_image_embed")
    max_text_len = r.inferred("max_text_len", int(unet["null_text_embed"].shape[1]), "null_text_embed")

    image_embed_dim = None
    cond_on_image = "image_to_tokens.0.weight" in keys
    to_hiddens = "to_image_hiddens.0.weight" in keys
    if to_hiddens and not cond_on_image:
        raise ConversionError(
            f"{what}: image-conditioned with image_embed_dim == cond_dim (no image_to_tokens projection); "
            "DALLE2-pytorch's own forward fails for that configuration, so it is not supported."
        )
    if cond_on_image:
        image_embed_dim = int(unet["image_to_tokens.0.weight"].shape[1])
        image_embed_dim = r.inferred("image_embed_dim", image_embed_dim, "image_to_tokens.0 columns")
    notes.append(f"cond_on_image_embeds = {cond_on_image}, add_image_embeds_to_time = {to_hiddens} (from the keys)")
    text_embed_dim = None
    cond_on_text = "text_to_cond.weight" in keys
    if cond_on_text:
        text_embed_dim = r.inferred("text_embed_dim", int(unet["text_to_cond.weight"].shape[1]), "text_to_cond")
    r.inferred("cond_on_text_encodings", cond_on_text, "text_to_cond present")
    lowres_noise_cond = "to_lowres_noise_cond.1.weight" in keys

    if "init_conv.convs.0.weight" in keys:
        convs = [unet[f"init_conv.convs.{i}.weight"] for i in range(_count_indices(keys, "init_conv.convs."))]
        init_cross_embed, kernels = True, tuple(int(w.shape[-1]) for w in convs)
        init_dim, init_channels = sum(int(w.shape[0]) for w in convs), int(convs[0].shape[1])
        init_kernel = 7
        r.inferred("init_cross_embed_kernel_sizes", tuple(sorted(kernels)), "init_conv.convs")
    else:
        w = unet["init_conv.weight"]
        init_cross_embed, kernels = False, (3, 7, 15)
        init_dim, init_channels, init_kernel = int(w.shape[0]), int(w.shape[1]), int(w.shape[-1])
        r.inferred("init_conv_kernel_size", init_kernel, "init_conv")
    r.inferred("init_cross_embed", init_cross_embed, "init_conv layout")

    num_stages = _count_indices(keys, "downs.")
    if num_stages == 0 or _count_indices(keys, "ups.") != num_stages:
        raise ConversionError(f"{what}: the numbers of down ({num_stages}) and up ({_count_indices(keys, 'ups.')}) stages differ.")
    memory_efficient = r.inferred("memory_efficient", "init_resnet_block.block1.project.weight" in keys, "init_resnet_block present")
    dims = [init_dim]
    for j in range(num_stages):
        post = next((unet[k] for k in (f"downs.{j}.4.weight", f"downs.{j}.4.1.weight") if k in unet), None)
        if post is None and f"downs.{j}.4.convs.0.weight" in unet:
            post = torch.empty(
                sum(int(unet[f"downs.{j}.4.convs.{i}.weight"].shape[0]) for i in range(_count_indices(keys, f"downs.{j}.4.convs.")))
            )
        if post is None:
            raise ConversionError(f"{what}: no down-sampling (or final 1x1 conv) weights under unets.{u}.downs.{j}.4.")
        dims.append(int(post.shape[0]))
    mults = []
    for d in dims[1:]:
        if d % dim:
            raise ConversionError(f"{what}: a stage has {d} channels, not a multiple of dim={dim}.")
        mults.append(d // dim)
    dim_mults = r.inferred("dim_mults", tuple(mults), "the stages' widths ÷ dim")
    num_resnet_blocks = tuple(_count_indices(keys, f"downs.{j}.2.") for j in range(num_stages))
    num_resnet_blocks = r.inferred("num_resnet_blocks", num_resnet_blocks if len(set(num_resnet_blocks)) > 1 else num_resnet_blocks[0], "downs.*.2.*")
    self_attn = tuple(f"downs.{j}.3.fn.fn.to_q.weight" in keys for j in range(num_stages))
    linear = tuple(f"downs.{j}.3.fn.to_qkv.weight" in keys for j in range(num_stages))
    self_attn = r.inferred("self_attn", self_attn if len(set(self_attn)) > 1 else self_attn[0], "downs.*.3 attention keys")
    sparse_attn = any(linear)
    if sparse_attn and not all(a or s for a, s in zip(_per(self_attn, num_stages), linear)):
        raise ConversionError(f"{what}: sparse_attn, but some stages without self-attention have no linear attention.")
    if sparse_attn:
        r.inferred("sparse_attn", sparse_attn, "linear attention keys")
    attn_dim_head = r.inferred("attn_dim_head", int(unet["mid_attn.fn.fn.null_kv"].shape[1]), "mid_attn null_kv")
    attn_heads = r.inferred("attn_heads", int(unet["mid_attn.fn.fn.to_q.weight"].shape[0]) // attn_dim_head, "mid_attn to_q rows ÷ attn_dim_head")

    def kind_of_down(j):
        base = f"downs.{j}.0" if memory_efficient else f"downs.{j}.4"
        if f"{base}.1.weight" in keys:
            return "pixel_unshuffle"
        if f"{base}.convs.0.weight" in keys:
            return "cross_embed"
        w = unet.get(f"{base}.weight")
        return "conv" if w is not None and w.shape[-1] == 4 else None

    downs = {kind_of_down(j) for j in range(num_stages if memory_efficient else num_stages - 1)} - {None}
    if len(downs) > 1:
        raise ConversionError(f"{what}: mixed down-sampling layers {sorted(downs)}.")
    downsample_type = downs.pop() if downs else "pixel_unshuffle"
    cross_kernels = (2, 4)
    if downsample_type == "cross_embed":
        base = "downs.0.0" if memory_efficient else "downs.0.4"
        cross_kernels = tuple(sorted(int(unet[f"{base}.convs.{i}.weight"].shape[-1]) for i in range(_count_indices(keys, f"{base}.convs."))))
    r.inferred("cross_embed_downsample", downsample_type == "cross_embed", "down-sampling keys")

    def kind_of_up(j):
        if f"ups.{j}.3.net.0.weight" in keys:
            return "pixel_shuffle"
        if f"ups.{j}.3.1.weight" in keys:
            return "nearest"
        return "conv_transpose" if f"ups.{j}.3.weight" in keys else None

    ups = {kind_of_up(j) for j in range(num_stages)} - {None}
    if len(ups) > 1:
        raise ConversionError(f"{what}: mixed up-sampling layers {sorted(ups)}.")
    upsample_type = ups.pop() if ups else "pixel_shuffle"
    if "pixel_shuffle_upsample" in unet_cfg:
        r.inferred("pixel_shuffle_upsample", upsample_type == "pixel_shuffle", "up-sampling keys")
    notes.append(f"up/down-sampling = {upsample_type} / {downsample_type} (from the keys)")

    out_rows, out_in = int(unet["to_out.weight"].shape[0]), int(unet["to_out.weight"].shape[1])
    final_kernel = int(unet["to_out.weight"].shape[-1])
    decoder_channels = int(decoder_cfg.get("channels") or 3)
    if semantics.lowres_cond_at_output and out_in != dim:
        lowres_cond, channels = True, out_in - dim
    elif semantics.lowres_cond_at_output:
        lowres_cond, channels = False, decoder_channels
    else:
        lowres_cond, channels = u > 0, decoder_channels
    if lowres_cond != (u > 0):
        raise ConversionError(
            f"{what}: lowres_cond={lowres_cond}, but in a DALLE2-pytorch Decoder only the unets after the first "
            "are conditioned on a low-resolution image."
        )
    channels = r.inferred("channels", channels, "to_out input" if lowres_cond and semantics.lowres_cond_at_output else "the decoder's channels")
    extra = init_channels - channels * (1 + int(lowres_cond))
    if extra not in (0, channels):
        raise ConversionError(
            f"{what}: init_conv takes {init_channels} channels, which is not channels={channels} × (1 + lowres_cond"
            f"={int(lowres_cond)} + self_cond)."
        )
    self_cond = r.inferred("self_cond", extra == channels, "init_conv input channels")
    if self_cond and not semantics.has_self_cond:
        raise ConversionError(f"{what}: the weights look self-conditioned, which release {semantics.version} did not have.")
    if out_rows not in (channels, 2 * channels):
        raise ConversionError(f"{what}: to_out has {out_rows} output channels; expected {channels} or {2 * channels}.")
    learned_variance = out_rows == 2 * channels
    notes.append(f"learned_variance = {learned_variance} (from to_out's {out_rows} output channels)")

    resnet_groups = r.chosen("resnet_groups", 8)
    weight_std = r.chosen("resnet_weight_standardization", False)
    scale_skip = r.chosen("scale_skip_connection", False)
    cos_cross = r.chosen("cosine_sim_cross_attn", False)
    cos_self = r.chosen("cosine_sim_self_attn", False)
    if cos_cross and not semantics.has_cosine_sim_cross_attn:
        raise ConversionError(f"{what}: cosine_sim_cross_attn did not exist in release {semantics.version}.")
    if cos_self and not semantics.has_cosine_sim_self_attn:
        raise ConversionError(f"{what}: cosine_sim_self_attn did not exist in release {semantics.version}.")
    if weight_std and semantics.version < (1, 7, 0):
        raise ConversionError(f"{what}: resnet_weight_standardization did not exist in release {semantics.version}.")

    return {
        "dim": dim,
        "dim_mults": tuple(dim_mults),
        "in_channels": channels,
        "out_channels": out_rows,
        "init_dim": init_dim,
        "image_embed_dim": image_embed_dim,
        "text_embed_dim": text_embed_dim,
        "cond_dim": cond_dim,
        "num_image_tokens": num_image_tokens,
        "num_time_tokens": num_time_tokens,
        "self_attn": self_attn,
        "attn_dim_head": attn_dim_head,
        "attn_heads": attn_heads,
        "lowres_cond": lowres_cond,
        "lowres_noise_cond": lowres_noise_cond,
        "self_cond": self_cond,
        "sparse_attn": sparse_attn,
        "cond_on_text_encodings": cond_on_text,
        "max_text_len": max_text_len,
        "cond_on_image_embeds": cond_on_image,
        "add_image_embeds_to_time": to_hiddens,
        "init_cross_embed": init_cross_embed,
        "init_cross_embed_kernel_sizes": tuple(sorted(kernels)),
        "init_conv_kernel_size": init_kernel,
        "resnet_groups": resnet_groups,
        "resnet_weight_standardization": bool(weight_std),
        "num_resnet_blocks": num_resnet_blocks,
        "cross_embed_downsample_kernel_sizes": cross_kernels,
        "memory_efficient": memory_efficient,
        "scale_skip_connection": bool(scale_skip),
        "final_conv_kernel_size": final_kernel,
        "upsample_type": upsample_type,
        "downsample_type": downsample_type,
        **semantics.model_switches(cosine_sim_self_attn=bool(cos_self), cosine_sim_cross_attn=bool(cos_cross)),
    }


def _per(value, n):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
