"""
Convert Kakao Brain's Karlo (``kakaobrain/karlo`` v1.0.alpha) checkpoints into a diffusers unCLIP folder.

Karlo ships three PyTorch-Lightning checkpoints (``torch.load(path)["state_dict"]``):

* the prior (``model.*``): a causal transformer over ``[text tokens, text embedding, time, noisy image embedding,
  prd token]`` → :class:`~diffusers.PriorTransformer`, plus CLIP's image-embedding mean/std from ``ViT-L-14_stats.th``;
* the decoder (``model.*``): a guided-diffusion UNet conditioned on CLIP → :class:`~diffusers.UNet2DConditionModel`
  and our :class:`~unclip_pipelines.models.UnCLIPTextProjModel` (its conditioning projections);
* the 64→256 upsampler (``model_first_steps.*`` and ``model_last_step.*``) → two :class:`~diffusers.UNet2DModel`.

Sizes are read from tensor shapes, so Karlo-architecture models of other sizes convert as well as the released
ones; the few values no shape reveals (attention heads, image size) come from Karlo's yaml configs, an argument,
or Karlo v1.0.alpha's value, and the summary says which. Every source key must be consumed and every target
parameter filled; anything else raises :class:`ConversionError` naming the keys and the config values involved.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .common import ConversionError, Rule, apply_rules, check_key_sets, load_into_model, load_torch_file

__all__ = [
    "ConversionError",
    "KarloConversionResult",
    "KarloDecoderArch",
    "KarloPriorArch",
    "KarloUNetArch",
    "build_scheduler_configs",
    "convert_decoder",
    "convert_karlo_to_diffusers",
    "convert_prior",
    "convert_super_res",
    "deinterleave_heads",
    "infer_decoder_arch",
    "infer_prior_arch",
    "infer_super_res_arch",
    "load_clip_stats",
    "load_karlo_config",
    "load_karlo_state_dict",
]

PRIOR_PREFIX = "model"
DECODER_PREFIX = "model"
SR_FIRST_PREFIX = "model_first_steps"
SR_LAST_PREFIX = "model_last_step"

#: tokens after the text tokens in Karlo's prior sequence: text embedding, time, noisy image embedding, prd token
PRIOR_EXTRA_TOKENS = 4
#: values of the released Karlo v1.0.alpha models, used only when neither a config nor an argument gives them
KARLO_PRIOR_NUM_HEADS = 32
KARLO_DECODER_HEAD_CHANNELS = 64
KARLO_DECODER_IMAGE_SIZE = 64
KARLO_SR_IMAGE_SIZE = 256
#: diffusers' karlo-v1-alpha clips the prior's x0 to ±5 (Karlo's own sampler clamps to ±10)
PRIOR_CLIP_SAMPLE_RANGE = 5.0
#: Karlo's default channel multipliers when the decoder config leaves ``channel_mult`` empty
_KARLO_DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}

TXT2IMG = "txt2img"
IMAGE_VARIATION = "image_variation"
VARIANTS = (TXT2IMG, IMAGE_VARIATION)


# --------------------------------------------------------------------------------------------------------------------
# loading


def load_karlo_state_dict(path: str | os.PathLike, *, allow_pickle: bool = False, what: str = "checkpoint"):
    """Load a Karlo checkpoint and return its ``state_dict`` (a bare ``{key: tensor}`` file is accepted too)."""
    loaded = load_torch_file(path, allow_pickle=allow_pickle, what=what)
    if isinstance(loaded, Mapping) and "state_dict" in loaded:
        state_dict = loaded["state_dict"]
    elif isinstance(loaded, Mapping) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        state_dict = loaded
    else:
        found = sorted(map(str, loaded.keys()))[:10] if isinstance(loaded, Mapping) else type(loaded).__name__
        raise ConversionError(
            f"The {what} {os.fspath(path)!r} has no 'state_dict' entry (found: {found}). Karlo checkpoints are "
            "PyTorch-Lightning files whose weights sit under ['state_dict']."
        )
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"The {what} {os.fspath(path)!r} has a 'state_dict' that is not a mapping.")
    return dict(state_dict)


def load_clip_stats(path: str | os.PathLike, *, allow_pickle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load Karlo's ``ViT-L-14_stats.th``: a ``(mean, std)`` pair of 1-D tensors of CLIP image embeddings."""
    loaded = load_torch_file(path, allow_pickle=allow_pickle, what="CLIP stats file")
    if (
        not isinstance(loaded, (tuple, list))
        or len(loaded) != 2
        or not all(isinstance(t, torch.Tensor) for t in loaded)
    ):
        raise ConversionError(
            f"The CLIP stats file {os.fspath(path)!r} must hold a (mean, std) pair of tensors, as Karlo's "
            f"ViT-L-14_stats.th does; it holds {type(loaded).__name__}."
        )
    # (D,) as in Karlo's file; (1, D) is accepted too
    mean, std = (t.detach().to(torch.float32).squeeze(0) if t.dim() == 2 else t.detach() for t in loaded)
    if mean.dim() != 1 or std.shape != mean.shape:
        raise ConversionError(
            f"The CLIP stats must be two 1-D tensors of the same size; got shapes {tuple(loaded[0].shape)} and "
            f"{tuple(loaded[1].shape)}."
        )
    if not bool((std > 0).all()):
        raise ConversionError("The CLIP stats' std has entries that are not positive.")
    return mean.to(torch.float32), std.to(torch.float32)


def load_karlo_config(config: str | os.PathLike | Mapping | None) -> dict | None:
    """Read a Karlo yaml config (``configs/*.yaml``) into a dict; ``None`` passes through."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        data = dict(config)
    else:
        import yaml

        with open(config, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        raise ConversionError(f"{config!r} is not a Karlo config: it has no 'model' section.")
    if not isinstance(data["model"].get("hparams"), Mapping):
        raise ConversionError(f"{config!r} is not a Karlo config: it has no 'model.hparams' section.")
    return data


def _hparams(config: Mapping | None) -> Mapping:
    return {} if config is None else config["model"]["hparams"]


# --------------------------------------------------------------------------------------------------------------------
# small helpers


def _require(state_dict: Mapping, keys: list[str], what: str) -> None:
    missing = [key for key in keys if key not in state_dict]
    if missing:
        sample = sorted(state_dict)[:8]
        raise ConversionError(
            f"{what}: cannot read the architecture, the checkpoint lacks {missing}. Its first keys are {sample}. "
            "Is this the right checkpoint for this option?"
        )


def _count_indices(state_dict: Mapping, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def _agree(what: str, config_key: str, config_value, inferred, evidence: str) -> None:
    if config_value != inferred:
        raise ConversionError(
            f"{what}: the config says {config_key}={config_value!r} but the checkpoint has {inferred!r} "
            f"({evidence}). Pass the config the checkpoint was trained with, or drop the config to use the shapes."
        )


def _pick(name: str, argument, argument_flag: str, config, config_key: str, default, notes: list[str]):
    """Resolve a value no tensor shape reveals: argument, then config, then Karlo's default (and say which)."""
    if argument is not None and config is not None and argument != config:
        raise ConversionError(
            f"{name}: {argument_flag}={argument!r} contradicts the config's {config_key}={config!r}; give one."
        )
    if argument is not None:
        notes.append(f"{name} = {argument!r} (from {argument_flag})")
        return argument
    if config is not None:
        notes.append(f"{name} = {config!r} (from the config's {config_key})")
        return config
    notes.append(
        f"{name} = {default!r} (NOT inferable from the weights; Karlo v1.0.alpha's value — pass {argument_flag} "
        "or the yaml config if your model differs)"
    )
    return default


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


# rule builders ----------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# prior


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


def _empty_model(cls, config: dict):
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return cls(**config)


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


# --------------------------------------------------------------------------------------------------------------------
# UNets (decoder and super-resolution)


@dataclass(frozen=True)
class KarloUNetArch:
    """A Karlo (guided-diffusion) ``UNetModel``, as far as its weights and config describe it."""

    model_channels: int
    block_channels: tuple[int, ...]
    num_res_blocks: int
    attention_levels: tuple[bool, ...]
    middle_attention: bool
    in_channels: int
    out_channels: int
    use_scale_shift_norm: bool
    encoder_channels: int | None
    image_size: int
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    notes: tuple[str, ...] = ()

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def channel_mult(self) -> tuple[float, ...]:
        return tuple(
            c / self.model_channels if c % self.model_channels else c // self.model_channels
            for c in self.block_channels
        )

    @property
    def has_attention(self) -> bool:
        return any(self.attention_levels) or self.middle_attention

    def head_dim(self, channels: int, site: str) -> int:
        """Channels per head of an attention block with ``channels`` channels (Karlo's AttentionBlock rules)."""
        if self.num_head_channels != -1:
            if channels % self.num_head_channels:
                raise ConversionError(
                    f"attention with {channels} channels is not divisible by num_head_channels="
                    f"{self.num_head_channels} (decoder config / --decoder_num_head_channels)."
                )
            return self.num_head_channels
        heads = self.num_heads
        if site == "up" and self.num_heads_upsample != -1:
            heads = self.num_heads_upsample
        if heads <= 0 or channels % heads:
            raise ConversionError(
                f"attention with {channels} channels cannot be split into {heads} heads (decoder config num_heads / "
                "num_heads_upsample)."
            )
        return channels // heads

    def diffusers_attention_head_dim(self) -> int | tuple[int, ...]:
        """
        diffusers' ``attention_head_dim`` (per down block; up block ``i`` reuses entry ``i`` and the mid block the
        last one — a diffusers quirk). Raises when Karlo's head layout cannot be expressed that way.
        """
        n = len(self.block_channels)
        wanted: list[set[int]] = [set() for _ in range(n)]
        for level, attention in enumerate(self.attention_levels):
            if attention:
                wanted[level].add(self.head_dim(self.block_channels[level], "down"))
                up_index = n - 1 - level
                wanted[up_index].add(self.head_dim(self.block_channels[level], "up"))
        if self.middle_attention:
            wanted[-1].add(self.head_dim(self.block_channels[-1], "mid"))
        conflicts = [i for i, values in enumerate(wanted) if len(values) > 1]
        if conflicts:
            raise ConversionError(
                "decoder: diffusers' UNet2DConditionModel gives up block i the head size of down block i, so Karlo's "
                f"head layout (num_heads={self.num_heads}, num_head_channels={self.num_head_channels}, "
                f"num_heads_upsample={self.num_heads_upsample}, channels {self.block_channels}) cannot be "
                f"represented (blocks {conflicts} would need sizes {[sorted(wanted[i]) for i in conflicts]})."
            )
        values = [next(iter(v)) if v else None for v in wanted]
        known = {v for v in values if v is not None}
        if len(known) <= 1:
            return known.pop() if known else KARLO_DECODER_HEAD_CHANNELS
        fill = next(v for v in values if v is not None)
        return tuple(v if v is not None else fill for v in values)


def _infer_unet(state_dict: Mapping, prefix: str, what: str) -> dict[str, Any]:
    """Everything about a Karlo UNet that the tensors reveal."""
    time0, conv_in, conv_out = (
        f"{prefix}.time_embed.0.weight",
        f"{prefix}.input_blocks.0.0.weight",
        f"{prefix}.out.2.weight",
    )
    _require(state_dict, [time0, conv_in, conv_out], what)
    time_embed_dim, model_channels = state_dict[time0].shape
    if time_embed_dim != 4 * model_channels:
        raise ConversionError(
            f"{what}: {time0} is {tuple(state_dict[time0].shape)}; Karlo's is (4 × num_channels, num_channels)."
        )
    first_channels, in_channels = state_dict[conv_in].shape[:2]
    out_channels = state_dict[conv_out].shape[0]
    if first_channels != model_channels:
        raise ConversionError(
            f"{what}: channel_mult[0] is {first_channels / model_channels} ({conv_in} has {first_channels} channels, "
            f"num_channels is {model_channels}); diffusers sizes the timestep features by the first block's channels, "
            "so only channel_mult[0] = 1 is supported."
        )
    for key in state_dict:
        if key.startswith(prefix + ".") and (
            re.search(r"\.input_blocks\.\d+\.0\.op\.weight$", key)
            or re.search(r"\.output_blocks\.\d+\.\d\.conv\.weight$", key)
        ):
            raise ConversionError(
                f"{what}: {key} is a convolutional down/upsampler (resblock_updown: false); diffusers' unCLIP blocks "
                "resample inside residual blocks (resblock_updown: true, as Karlo). Not supported."
            )
    n_in = _count_indices(state_dict, f"{prefix}.input_blocks.")
    n_out = _count_indices(state_dict, f"{prefix}.output_blocks.")
    upsamplers = [
        k
        for k in range(n_out)
        if any(f"{prefix}.output_blocks.{k}.{j}.in_layers.0.weight" in state_dict for j in (1, 2))
    ]
    levels = len(upsamplers) + 1
    num_res_blocks = n_out // levels - 1 if n_out % levels == 0 else -1
    if num_res_blocks < 1 or n_in != 1 + levels * num_res_blocks + (levels - 1):
        raise ConversionError(
            f"{what}: {n_in} input blocks and {n_out} output blocks with {levels - 1} upsampling blocks do not form a "
            "Karlo UNet (expected 1 + levels × num_res_blocks + levels - 1 input and levels × (num_res_blocks + 1) "
            "output blocks)."
        )
    block_channels, attention = [], []
    for level in range(levels):
        k = 1 + level * (num_res_blocks + 1)
        key = f"{prefix}.input_blocks.{k}.0.out_layers.3.weight"
        _require(state_dict, [key], what)
        block_channels.append(int(state_dict[key].shape[0]))
        attention.append(f"{prefix}.input_blocks.{k}.1.qkv.weight" in state_dict)
    middle_attention = f"{prefix}.middle_block.1.qkv.weight" in state_dict
    emb = f"{prefix}.input_blocks.1.0.emb_layers.1.weight"
    if emb not in state_dict:
        raise ConversionError(
            f"{what}: no {emb}: residual blocks without a timestep embedding (use_time_embedding: false) are not "
            "supported."
        )
    scale_shift = state_dict[emb].shape[0] == 2 * block_channels[0]
    encoder_channels = None
    for key in sorted(state_dict):
        if key.startswith(prefix + ".") and key.endswith(".encoder_kv.weight"):
            encoder_channels = int(state_dict[key].shape[1])
            break
    return dict(
        model_channels=int(model_channels),
        block_channels=tuple(block_channels),
        num_res_blocks=num_res_blocks,
        attention_levels=tuple(attention),
        middle_attention=middle_attention,
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        use_scale_shift_norm=bool(scale_shift),
        encoder_channels=encoder_channels,
    )


def _check_unet_against_config(found: dict, hp: Mapping, what: str, *, image_size: int, names: dict[str, str]) -> None:
    """Compare shape-inferred UNet values with a Karlo config (``names`` maps our fields to the config's keys)."""
    mc = found["model_channels"]
    if names.get("model_channels") in hp:
        _agree(what, names["model_channels"], hp[names["model_channels"]], mc, "time_embed.0.weight")
    if names.get("num_res_blocks") in hp:
        _agree(
            what,
            names["num_res_blocks"],
            hp[names["num_res_blocks"]],
            found["num_res_blocks"],
            "residual blocks per level, counted from output_blocks",
        )
    key = names.get("channel_mult")
    if key in hp:
        mult = hp[key]
        if isinstance(mult, str):
            if mult.strip() == "":
                if image_size not in _KARLO_DEFAULT_CHANNEL_MULT:
                    raise ConversionError(f"{what}: channel_mult is empty and image_size={image_size} has no default.")
                mult = _KARLO_DEFAULT_CHANNEL_MULT[image_size]
            else:
                mult = tuple(float(m) for m in mult.split(","))
        elif isinstance(mult, (int, float)):
            mult = (mult,)
        expected = tuple(int(float(m) * mc) for m in mult)
        _agree(
            what,
            f"{key} (× num_channels {mc})",
            expected,
            found["block_channels"],
            "channels of each level's first residual block",
        )


def _unet_rules(arch: KarloUNetArch, prefix: str, target: str) -> list[Rule]:
    """Rules for every tensor of a Karlo UNet, walking it in the order Karlo's constructor builds it."""
    mc, temb, chans = arch.model_channels, arch.time_embed_dim, arch.block_channels
    nr, last = arch.num_res_blocks, len(chans) - 1

    def src(name):
        return f"{prefix}.{name}"

    def level_why(level):
        return f"num_channels={mc} × channel_mult[{level}]={arch.channel_mult[level]} = {chans[level]} channels"

    def resblock(s, d, c_in, c_out, why):
        rules = [
            *_norm(target, f"{s}.in_layers.0", f"{d}.norm1", c_in, why),
            *_conv(target, f"{s}.in_layers.2", f"{d}.conv1", c_in, c_out, 3, why),
            *_linear(
                target,
                f"{s}.emb_layers.1",
                f"{d}.time_emb_proj",
                temb,
                2 * c_out if arch.use_scale_shift_norm else c_out,
                f"{why}, time embedding 4 × num_channels = {temb}, use_scale_shift_norm={arch.use_scale_shift_norm}",
            ),
            *_norm(target, f"{s}.out_layers.0", f"{d}.norm2", c_out, why),
            *_conv(target, f"{s}.out_layers.3", f"{d}.conv2", c_out, c_out, 3, why),
        ]
        if c_in != c_out:
            rules += _conv(target, f"{s}.skip_connection", f"{d}.conv_shortcut", c_in, c_out, 1, why)
        return rules

    def attention(s, d, channels, site, why):
        if arch.encoder_channels is None:
            raise ConversionError(
                f"{target}: {s} has no encoder_kv (text cross-attention); diffusers' SimpleCrossAttn blocks always "
                "attend to the text. Not supported."
            )
        hd = arch.head_dim(channels, site)
        head_why = f"{why}, heads of {hd} channels"
        enc = arch.encoder_channels
        return [
            *_norm(target, f"{s}.norm", f"{d}.group_norm", channels, why),
            _fused_heads(
                target,
                f"{s}.qkv",
                [f"{d}.to_q", f"{d}.to_k", f"{d}.to_v"],
                channels,
                channels,
                hd,
                head_why + " (q, k, v interleaved per head)",
                conv1d=True,
            ),
            _fused_heads(
                target,
                f"{s}.encoder_kv",
                [f"{d}.add_k_proj", f"{d}.add_v_proj"],
                enc,
                channels,
                hd,
                f"{head_why}, xf_width={enc} (k, v interleaved per head)",
                conv1d=True,
            ),
            Rule(
                target,
                {f"{s}.proj_out.weight": ((channels, channels, 1), why), f"{s}.proj_out.bias": ((channels,), why)},
                lambda t, s=s, d=d: {
                    f"{d}.to_out.0.weight": t[f"{s}.proj_out.weight"][:, :, 0],
                    f"{d}.to_out.0.bias": t[f"{s}.proj_out.bias"],
                },
            ),
        ]

    rules = [
        *_linear(target, src("time_embed.0"), "time_embedding.linear_1", mc, temb, f"num_channels={mc}"),
        *_linear(target, src("time_embed.2"), "time_embedding.linear_2", temb, temb, f"num_channels={mc}"),
        *_conv(
            target,
            src("input_blocks.0.0"),
            "conv_in",
            arch.in_channels,
            chans[0],
            3,
            f"in_channels={arch.in_channels}, {level_why(0)}",
        ),
    ]
    ch, skips, k = chans[0], [chans[0]], 1
    for level, c_out in enumerate(chans):
        why = level_why(level)
        for j in range(nr):
            rules += resblock(src(f"input_blocks.{k}.0"), f"down_blocks.{level}.resnets.{j}", ch, c_out, why)
            ch = c_out
            if arch.attention_levels[level]:
                rules += attention(src(f"input_blocks.{k}.1"), f"down_blocks.{level}.attentions.{j}", ch, "down", why)
            skips.append(ch)
            k += 1
        if level != last:
            rules += resblock(src(f"input_blocks.{k}.0"), f"down_blocks.{level}.downsamplers.0", ch, ch, why)
            skips.append(ch)
            k += 1
    why = level_why(last)
    rules += resblock(src("middle_block.0"), "mid_block.resnets.0", ch, ch, why)
    if arch.middle_attention:
        rules += attention(src("middle_block.1"), "mid_block.attentions.0", ch, "mid", why)
    rules += resblock(src(f"middle_block.{2 if arch.middle_attention else 1}"), "mid_block.resnets.1", ch, ch, why)
    k = 0
    for up, level in enumerate(reversed(range(len(chans)))):
        c_out, why = chans[level], level_why(level)
        for i in range(nr + 1):
            skip = skips.pop()
            rules += resblock(
                src(f"output_blocks.{k}.0"),
                f"up_blocks.{up}.resnets.{i}",
                ch + skip,
                c_out,
                f"{why}; input {ch} + skip {skip} channels",
            )
            ch = c_out
            sub = 1
            if arch.attention_levels[level]:
                rules += attention(src(f"output_blocks.{k}.1"), f"up_blocks.{up}.attentions.{i}", ch, "up", why)
                sub = 2
            if level and i == nr:
                rules += resblock(src(f"output_blocks.{k}.{sub}"), f"up_blocks.{up}.upsamplers.0", ch, ch, why)
            k += 1
    rules += [
        *_norm(target, src("out.0"), "conv_norm_out", ch, level_why(0)),
        *_conv(
            target,
            src("out.2"),
            "conv_out",
            ch,
            arch.out_channels,
            3,
            f"out_channels={arch.out_channels}, {level_why(0)}",
        ),
    ]
    return rules


# decoder ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KarloDecoderArch:
    """Karlo ``PLMImUNet``: a UNet plus its CLIP conditioning projections (names as in ``decoder_*.yaml``)."""

    unet: KarloUNetArch
    clip_dim: int
    xf_width: int
    clip_emb_mult: int
    notes: tuple[str, ...] = ()

    def diffusers_config(self) -> dict[str, Any]:
        u = self.unet
        down = tuple("SimpleCrossAttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in u.attention_levels)
        up = tuple("SimpleCrossAttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(u.attention_levels))
        return {
            "sample_size": u.image_size,
            "in_channels": u.in_channels,
            "out_channels": u.out_channels,
            "layers_per_block": u.num_res_blocks,
            "block_out_channels": list(u.block_channels),
            "down_block_types": list(down),
            "up_block_types": list(up),
            "mid_block_type": "UNetMidBlock2DSimpleCrossAttn" if u.middle_attention else "UNetMidBlock2D",
            "cross_attention_dim": self.xf_width,
            "class_embed_type": "identity",
            "attention_head_dim": u.diffusers_attention_head_dim(),
            "resnet_time_scale_shift": "scale_shift" if u.use_scale_shift_norm else "default",
            "norm_num_groups": 32,
            "norm_eps": 1e-5,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
            "act_fn": "silu",
        }

    def text_proj_config(self) -> dict[str, Any]:
        return {
            "clip_extra_context_tokens": self.clip_emb_mult,
            "clip_embeddings_dim": self.clip_dim,
            "time_embed_dim": self.unet.time_embed_dim,
            "cross_attention_dim": self.xf_width,
        }


def infer_decoder_arch(
    state_dict: Mapping, config=None, *, num_head_channels: int | None = None, image_size: int | None = None
) -> KarloDecoderArch:
    """Read the decoder's sizes from its tensors; head size and image size from the config, an argument or Karlo."""
    what = "decoder checkpoint"
    p = DECODER_PREFIX
    found = _infer_unet(state_dict, p, what)
    _require(state_dict, [f"{p}.clip_emb.weight", f"{p}.text_seq_proj.0.weight", f"{p}.clip_tok_proj.weight"], what)
    clip_dim = int(state_dict[f"{p}.clip_emb.weight"].shape[1])
    xf_width = int(state_dict[f"{p}.text_seq_proj.0.weight"].shape[0])
    tok_rows = int(state_dict[f"{p}.clip_tok_proj.weight"].shape[0])
    if tok_rows % xf_width:
        raise ConversionError(
            f"{what}: {p}.clip_tok_proj has {tok_rows} outputs, not a multiple of xf_width={xf_width} "
            "(it should be xf_width × clip_emb_mult)."
        )
    clip_emb_mult = tok_rows // xf_width
    if found["encoder_channels"] not in (None, xf_width):
        raise ConversionError(
            f"{what}: the attention blocks' encoder_kv read {found['encoder_channels']} channels but text_seq_proj "
            f"gives xf_width={xf_width}."
        )
    hp = _hparams(config)
    notes = []
    image_size = _pick(
        "decoder image size",
        image_size,
        "--decoder_image_size",
        hp.get("image_size"),
        "image_size",
        KARLO_DECODER_IMAGE_SIZE,
        notes,
    )
    if config is not None:
        _check_unet_against_config(
            found,
            hp,
            "decoder config",
            image_size=image_size,
            names={
                "model_channels": "num_channels",
                "num_res_blocks": "num_res_blocks",
                "channel_mult": "channel_mult",
            },
        )
        if "attention_resolutions" in hp:
            resolutions = hp["attention_resolutions"]
            resolutions = [resolutions] if isinstance(resolutions, int) else str(resolutions).split(",")
            factors = {image_size // int(r) for r in resolutions if str(r).strip()}
            expected = tuple((1 << level) in factors for level in range(len(found["block_channels"])))
            _agree(
                "decoder config",
                f"attention_resolutions={hp['attention_resolutions']} (image_size {image_size}) → attention per level",
                expected,
                found["attention_levels"],
                "levels whose input blocks hold a .1.qkv attention",
            )
        for key, value, evidence in (
            ("use_scale_shift_norm", found["use_scale_shift_norm"], "emb_layers.1 rows = 2 × channels"),
            ("learn_sigma", found["out_channels"] == 6, f"out.2 has {found['out_channels']} output channels"),
            ("clip_dim", clip_dim, "clip_emb.weight"),
            ("xf_width", xf_width, "text_seq_proj.0.weight"),
            ("clip_emb_mult", clip_emb_mult, "clip_tok_proj.weight rows / xf_width"),
            ("resblock_updown", True, "residual up/down-sampling blocks"),
        ):
            if key in hp:
                _agree("decoder config", key, hp[key], value, evidence)
        if hp.get("clip_emb_drop", 0.1) <= 0:
            raise ConversionError(
                "decoder config: clip_emb_drop=0 means the decoder has no learned null image embedding (cf_param), "
                "which unCLIP's classifier-free guidance needs. Not supported."
            )
    heads_notes: list[str] = []
    if config is not None and any(k in hp for k in ("num_head_channels", "num_heads", "num_heads_upsample")):
        head_channels = hp.get("num_head_channels", -1)
        if num_head_channels is not None and num_head_channels != head_channels:
            raise ConversionError(
                f"decoder: --decoder_num_head_channels={num_head_channels} contradicts the config's "
                f"num_head_channels={head_channels}; give one."
            )
        heads = (hp.get("num_heads", 1), head_channels, hp.get("num_heads_upsample", -1))
        heads_notes.append(
            f"decoder attention heads: num_heads={heads[0]}, num_head_channels={heads[1]}, num_heads_upsample="
            f"{heads[2]} (from the config)"
        )
    else:
        head_channels = _pick(
            "decoder attention head channels",
            num_head_channels,
            "--decoder_num_head_channels",
            None,
            "num_head_channels",
            KARLO_DECODER_HEAD_CHANNELS,
            heads_notes,
        )
        heads = (1, head_channels, -1)
    unet = KarloUNetArch(
        **found,
        image_size=image_size,
        num_heads=heads[0],
        num_head_channels=heads[1],
        num_heads_upsample=heads[2],
    )
    found_notes = (
        f"num_channels={unet.model_channels}, channel_mult={unet.channel_mult}, num_res_blocks={unet.num_res_blocks}, "
        f"attention at levels {[i for i, a in enumerate(unet.attention_levels) if a]} (+ middle: "
        f"{unet.middle_attention}), use_scale_shift_norm={unet.use_scale_shift_norm}, out_channels="
        f"{unet.out_channels}, clip_dim={clip_dim}, xf_width={xf_width}, clip_emb_mult={clip_emb_mult} "
        "(from tensor shapes)"
    )
    # validate the head layout now (raises with the config names if it does not fit)
    unet.diffusers_attention_head_dim()
    return KarloDecoderArch(unet, clip_dim, xf_width, clip_emb_mult, tuple([found_notes, *notes, *heads_notes]))


def _text_proj_rules(arch: KarloDecoderArch) -> list[Rule]:
    p, t = DECODER_PREFIX, "text_proj"
    c, x, temb = arch.clip_dim, arch.xf_width, arch.unet.time_embed_dim
    cx, ct = f"clip_dim={c}, xf_width={x}", f"clip_dim={c}, time embedding 4 × num_channels = {temb}"
    return [
        *_linear(t, f"{p}.text_seq_proj.0", "encoder_hidden_states_proj", c, x, cx),
        *_norm(t, f"{p}.text_seq_proj.1", "text_encoder_hidden_states_norm", x, cx),
        *_linear(t, f"{p}.text_feat_proj", "embedding_proj", c, temb, ct),
        *_linear(t, f"{p}.clip_emb", "clip_image_embeddings_project_to_time_embeddings", c, temb, ct),
        *_linear(
            t,
            f"{p}.clip_tok_proj",
            "clip_extra_context_tokens_proj",
            c,
            x * arch.clip_emb_mult,
            f"{cx}, clip_emb_mult={arch.clip_emb_mult}",
        ),
        _copy(
            t,
            f"{p}.cf_param",
            "learned_classifier_free_guidance_embeddings",
            (c,),
            f"clip_dim={c}",
            hint="the learned null image embedding exists only when the decoder was trained with clip_emb_drop > 0; "
            "unCLIP's classifier-free guidance needs it, so such a decoder is not supported.",
        ),
    ]


def convert_decoder(
    state_dict: Mapping,
    *,
    config=None,
    num_head_channels: int | None = None,
    image_size: int | None = None,
    copy_tensors: bool = True,
):
    """Karlo decoder ``state_dict`` → ``(UNet2DConditionModel, UnCLIPTextProjModel, KarloDecoderArch)``."""
    from diffusers import UNet2DConditionModel

    from ..models import UnCLIPTextProjModel

    config = load_karlo_config(config)
    arch = infer_decoder_arch(state_dict, config, num_head_channels=num_head_channels, image_size=image_size)
    rules = _unet_rules(arch.unet, DECODER_PREFIX, "decoder") + _text_proj_rules(arch)
    converted = apply_rules(
        state_dict, rules, "decoder checkpoint", context=_unet_context(arch.unet), copy=copy_tensors
    )
    decoder = load_into_model(
        _empty_model(UNet2DConditionModel, arch.diffusers_config()), converted["decoder"], "decoder"
    )
    text_proj = load_into_model(
        _empty_model(UnCLIPTextProjModel, arch.text_proj_config()), converted["text_proj"], "text_proj"
    )
    return decoder.eval(), text_proj.eval(), arch


def _unet_context(u: KarloUNetArch) -> str:
    return (
        f" (num_channels={u.model_channels}, channel_mult={u.channel_mult}, num_res_blocks={u.num_res_blocks}, "
        f"attention levels={u.attention_levels}, middle attention={u.middle_attention})"
    )


# super-resolution ---------------------------------------------------------------------------------------------------


def _sr_diffusers_config(u: KarloUNetArch) -> dict[str, Any]:
    n = len(u.block_channels)
    return {
        "sample_size": u.image_size,
        "in_channels": u.in_channels,
        "out_channels": u.out_channels,
        "layers_per_block": u.num_res_blocks,
        "block_out_channels": list(u.block_channels),
        "down_block_types": ["ResnetDownsampleBlock2D"] * n,
        "up_block_types": ["ResnetUpsampleBlock2D"] * n,
        "add_attention": False,
        "resnet_time_scale_shift": "scale_shift" if u.use_scale_shift_norm else "default",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
        "time_embedding_type": "positional",
    }


def infer_super_res_arch(
    state_dict: Mapping, prefix: str, config=None, *, image_size: int = KARLO_SR_IMAGE_SIZE
) -> KarloUNetArch:
    """Read one of the two 64→256 UNets (``prefix`` ``model_first_steps`` or ``model_last_step``)."""
    what = f"super-resolution checkpoint ({prefix})"
    found = _infer_unet(state_dict, prefix, what)
    if any(found["attention_levels"]) or found["middle_attention"]:
        raise ConversionError(
            f"{what}: has attention blocks; Karlo's upsamplers have none (attention_resolutions=(), "
            "use_middle_attention=False) and only that layout is supported."
        )
    if found["in_channels"] != 2 * found["out_channels"]:
        raise ConversionError(
            f"{what}: {found['in_channels']} input channels for {found['out_channels']} output channels; Karlo's "
            "SuperResUNetModel takes the noisy image and the upsampled low-res image (in = 2 × out)."
        )
    hp = _hparams(config)
    notes: list[str] = []
    if config is not None:
        _check_unet_against_config(
            found,
            hp,
            "super-resolution config",
            image_size=image_size,
            names={"model_channels": "channels", "num_res_blocks": "depth", "channel_mult": "channels_multiple"},
        )
    notes.insert(
        0,
        f"{prefix}: channels={found['model_channels']}, channels_multiple="
        f"{tuple(c // found['model_channels'] for c in found['block_channels'])}, depth="
        f"{found['num_res_blocks']} (from tensor shapes)",
    )
    return KarloUNetArch(**found, image_size=image_size, notes=tuple(notes))


def convert_super_res(
    state_dict: Mapping,
    *,
    config=None,
    image_size: int | None = None,
    image_size_origin: str = "--sr_image_size",
    copy_tensors: bool = True,
):
    """Karlo SR ``state_dict`` → ``(super_res_first, super_res_last, (arch_first, arch_last))`` UNet2DModels."""
    from diffusers import UNet2DModel

    config = load_karlo_config(config)
    size_notes: list[str] = []
    image_size = _pick(
        "super-resolution image size", image_size, image_size_origin, None, "-", KARLO_SR_IMAGE_SIZE, size_notes
    )
    stray = [k for k in state_dict if not k.startswith((SR_FIRST_PREFIX + ".", SR_LAST_PREFIX + "."))]
    check_key_sets(
        [k for k in state_dict if k in stray],
        [],
        "super-resolution checkpoint",
        context=f" (Karlo's holds only {SR_FIRST_PREFIX}.* and {SR_LAST_PREFIX}.*)",
    )
    models, archs = [], []
    for prefix in (SR_FIRST_PREFIX, SR_LAST_PREFIX):
        part = {k: v for k, v in state_dict.items() if k.startswith(prefix + ".")}
        arch = infer_super_res_arch(part, prefix, config, image_size=image_size)
        if prefix == SR_FIRST_PREFIX:
            arch = dataclasses.replace(arch, notes=arch.notes + tuple(size_notes))
        converted = apply_rules(
            part,
            _unet_rules(arch, prefix, prefix),
            f"super-resolution checkpoint ({prefix})",
            context=_unet_context(arch),
            copy=copy_tensors,
        )
        models.append(
            load_into_model(_empty_model(UNet2DModel, _sr_diffusers_config(arch)), converted[prefix], prefix).eval()
        )
        archs.append(arch)
    return models[0], models[1], tuple(archs)


# --------------------------------------------------------------------------------------------------------------------
# schedulers


_SCHEDULER_DEFAULTS = {
    "prior": {
        "variance_type": "fixed_small_log",
        "prediction_type": "sample",
        "clip_sample_range": PRIOR_CLIP_SAMPLE_RANGE,
    },
    "decoder": {"variance_type": "learned_range", "prediction_type": "epsilon", "clip_sample_range": 1.0},
    "super_res": {"variance_type": "fixed_small_log", "prediction_type": "epsilon", "clip_sample_range": 1.0},
}


def _scheduler_from_karlo_diffusion(stage: str, diffusion: Mapping | None, notes: list[str]) -> dict[str, Any]:
    base = {
        "num_train_timesteps": 1000,
        "clip_sample": True,
        "beta_schedule": "squaredcos_cap_v2",
        **_SCHEDULER_DEFAULTS[stage],
    }
    if diffusion is None:
        notes.append(f"{stage}_scheduler: Karlo v1.0.alpha's settings (no config given)")
        return base
    steps = int(diffusion.get("steps", 1000))
    schedule = diffusion.get("noise_schedule", "squaredcos_cap_v2")
    if diffusion.get("learn_sigma", False):
        variance = "learned_range"
    elif diffusion.get("sigma_small", False):
        variance = "fixed_small_log"
    else:
        raise ConversionError(
            f"{stage} config: learn_sigma=false with sigma_small=false (fixed large variance) is not supported by "
            "UnCLIPScheduler."
        )
    config = {
        **base,
        "num_train_timesteps": steps,
        "variance_type": variance,
        "prediction_type": "sample" if diffusion.get("predict_xstart", False) else "epsilon",
    }
    if schedule == "linear":
        scale = 1000 / steps  # guided-diffusion's linear schedule is defined for 1000 steps and rescaled
        config.update(beta_schedule="linear", beta_start=scale * 0.0001, beta_end=scale * 0.02)
    elif schedule != "squaredcos_cap_v2":
        raise ConversionError(f"{stage} config: noise_schedule={schedule!r} is not supported by UnCLIPScheduler.")
    notes.append(f"{stage}_scheduler: from the config's diffusion section")
    return config


def build_scheduler_configs(
    *,
    prior_config=None,
    decoder_config=None,
    sr_config=None,
    decoder_out_channels: int | None = None,
    notes: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """UnCLIPScheduler configs for the three stages, from Karlo's yaml ``diffusion`` sections or Karlo's defaults."""
    notes = [] if notes is None else notes
    out = {}
    for stage, config in (("prior", prior_config), ("decoder", decoder_config), ("super_res", sr_config)):
        config = load_karlo_config(config)
        out[stage] = _scheduler_from_karlo_diffusion(stage, None if config is None else config.get("diffusion"), notes)
    if out["prior"]["variance_type"] == "learned_range":
        raise ConversionError("prior config: learn_sigma=true, but Karlo's prior outputs no variance channels.")
    if decoder_out_channels is not None:
        learned = decoder_out_channels == 6
        if decoder_config is None:
            out["decoder"]["variance_type"] = "learned_range" if learned else "fixed_small_log"
            if not learned:
                notes.append("decoder_scheduler: 3 output channels, so no learned variance; fixed_small_log assumed")
        elif (out["decoder"]["variance_type"] == "learned_range") != learned:
            raise ConversionError(
                f"decoder config: learn_sigma={not learned} but the decoder outputs {decoder_out_channels} channels."
            )
    return out


# --------------------------------------------------------------------------------------------------------------------
# text / image encoders


def _load_text_encoder(path: str, clip_dim: int, text_ctx: int | None):
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    if not os.path.isdir(path):
        raise ConversionError(f"--text_encoder_path {path!r} is not a folder (a local CLIP text model + tokenizer).")
    tokenizer = CLIPTokenizer.from_pretrained(path, pad_token="!")
    pad_id = tokenizer.convert_tokens_to_ids("!")
    if pad_id != 0:
        raise ConversionError(
            f"the tokenizer in {path!r} maps the pad token '!' to id {pad_id}; Karlo pads with id 0 ('!' in CLIP's "
            "vocabulary). Use CLIP's own tokenizer."
        )
    text_encoder = CLIPTextModelWithProjection.from_pretrained(path)
    cfg = text_encoder.config
    problems = []
    if cfg.projection_dim != clip_dim:
        problems.append(f"projection_dim={cfg.projection_dim} (the models' clip_dim is {clip_dim})")
    if cfg.hidden_size != clip_dim:
        problems.append(f"hidden_size={cfg.hidden_size} (Karlo projects the text states from clip_dim={clip_dim})")
    if text_ctx is not None and tokenizer.model_max_length != text_ctx:
        problems.append(f"tokenizer model_max_length={tokenizer.model_max_length} (the prior's text_ctx is {text_ctx})")
    if problems:
        raise ConversionError(f"the CLIP text model in {path!r} does not fit the checkpoints: " + "; ".join(problems))
    return text_encoder.eval(), tokenizer


def _load_image_encoder(path: str, clip_dim: int, notes: list[str]):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    if not os.path.isdir(path):
        raise ConversionError(f"--image_encoder_path {path!r} is not a folder (a local CLIP vision model).")
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(path)
    if image_encoder.config.projection_dim != clip_dim:
        raise ConversionError(
            f"the CLIP vision model in {path!r} has projection_dim={image_encoder.config.projection_dim}; the "
            f"decoder's clip_dim is {clip_dim}."
        )
    if os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        feature_extractor = CLIPImageProcessor.from_pretrained(path)
        notes.append("feature_extractor: the image encoder folder's preprocessor_config.json")
    else:
        size = image_encoder.config.image_size
        feature_extractor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        notes.append(f"feature_extractor: CLIP's default preprocessing at {size} px (no preprocessor_config.json)")
    return image_encoder.eval(), feature_extractor


# --------------------------------------------------------------------------------------------------------------------
# the whole folder


@dataclass
class KarloConversionResult:
    """What :func:`convert_karlo_to_diffusers` wrote, and where each size came from."""

    dump_path: str
    variant: str
    components: dict[str, Any]
    prior_arch: KarloPriorArch | None = None
    decoder_arch: KarloDecoderArch | None = None
    super_res_archs: tuple[KarloUNetArch, KarloUNetArch] | None = None
    lines: list[str] = field(default_factory=list)
    pipeline: Any = None

    def summary(self) -> str:
        return "\n".join(self.lines)


def _count(model) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"


def convert_karlo_to_diffusers(
    *,
    dump_path: str | os.PathLike,
    decoder_checkpoint_path: str | os.PathLike,
    super_res_unet_checkpoint_path: str | os.PathLike,
    text_encoder_path: str | os.PathLike,
    variant: str = TXT2IMG,
    prior_checkpoint_path: str | os.PathLike | None = None,
    clip_stat_path: str | os.PathLike | None = None,
    image_encoder_path: str | os.PathLike | None = None,
    prior_config=None,
    decoder_config=None,
    sr_config=None,
    prior_num_heads: int | None = None,
    decoder_num_head_channels: int | None = None,
    decoder_image_size: int | None = None,
    sr_image_size: int | None = None,
    allow_pickle: bool = False,
    push_to_hub: bool = False,
    hub_model_id: str | None = None,
    private: bool = False,
) -> KarloConversionResult:
    """
    Convert Karlo's checkpoints into a diffusers folder in ``kakaobrain/karlo-v1-alpha``'s layout
    (``variant="txt2img"``) or ``karlo-v1-alpha-image-variations``'s (``variant="image_variation"``).
    """
    from ..schedulers import UnCLIPScheduler

    if variant not in VARIANTS:
        raise ConversionError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if variant == TXT2IMG:
        needed = {"--prior_checkpoint_path": prior_checkpoint_path, "--clip_stat_path": clip_stat_path}
        unused = {"--image_encoder_path": image_encoder_path}
    else:
        needed = {"--image_encoder_path": image_encoder_path}
        unused = {
            "--prior_checkpoint_path": prior_checkpoint_path,
            "--clip_stat_path": clip_stat_path,
            "--prior_config": prior_config,
            "--prior_num_heads": prior_num_heads,
        }
    problems = [f"--variant {variant} needs {flag}" for flag, value in needed.items() if value is None]
    problems += [
        f"--variant {variant} does not use {flag} (leave it out; nothing is ignored silently)"
        for flag, value in unused.items()
        if value is not None
    ]
    if push_to_hub and not hub_model_id:
        problems.append("--push_to_hub needs --hub_model_id")
    if problems:
        raise ConversionError("; ".join(problems) + ".")

    dump_path = os.fspath(dump_path)
    lines = [f"Karlo → diffusers ({variant}) into {dump_path}"]
    components: dict[str, Any] = {}
    result = KarloConversionResult(dump_path, variant, components, lines=lines)
    prior_config, decoder_config, sr_config = map(load_karlo_config, (prior_config, decoder_config, sr_config))

    # load and convert everything before writing anything
    text_ctx = None
    if variant == TXT2IMG:
        clip_mean, clip_std = load_clip_stats(clip_stat_path, allow_pickle=allow_pickle)
        prior_sd = load_karlo_state_dict(prior_checkpoint_path, allow_pickle=allow_pickle, what="prior checkpoint")
        prior, prior_arch = convert_prior(
            prior_sd, clip_mean, clip_std, config=prior_config, num_heads=prior_num_heads, copy_tensors=False
        )
        del prior_sd
        components["prior"] = prior
        result.prior_arch = prior_arch
        text_ctx = prior_arch.text_ctx
        lines.append(
            f"prior: {len(prior.state_dict())} tensors, {_count(prior)}; clip_mean/clip_std from the stats file"
        )
        lines += [f"  {note}" for note in prior_arch.notes]

    decoder_sd = load_karlo_state_dict(decoder_checkpoint_path, allow_pickle=allow_pickle, what="decoder checkpoint")
    decoder, text_proj, decoder_arch = convert_decoder(
        decoder_sd,
        config=decoder_config,
        num_head_channels=decoder_num_head_channels,
        image_size=decoder_image_size,
        copy_tensors=False,
    )
    del decoder_sd
    if result.prior_arch is not None and result.prior_arch.clip_dim != decoder_arch.clip_dim:
        raise ConversionError(
            f"the prior's clip_dim ({result.prior_arch.clip_dim}) and the decoder's ({decoder_arch.clip_dim}) differ; "
            "they must come from the same CLIP model."
        )
    components.update(decoder=decoder, text_proj=text_proj)
    result.decoder_arch = decoder_arch
    lines.append(
        f"decoder: {len(decoder.state_dict())} tensors, {_count(decoder)}; text_proj: "
        f"{len(text_proj.state_dict())} tensors"
    )
    lines += [f"  {note}" for note in decoder_arch.notes]

    sr_sd = load_karlo_state_dict(
        super_res_unet_checkpoint_path, allow_pickle=allow_pickle, what="super-resolution checkpoint"
    )
    origin = "--sr_image_size"
    if sr_image_size is None:  # Karlo's upsampler goes 64 → 256: four times the decoder's size
        sr_image_size, origin = 4 * decoder_arch.unet.image_size, "4 × the decoder's, as Karlo's 64 → 256"
    sr_first, sr_last, sr_archs = convert_super_res(
        sr_sd, config=sr_config, image_size=sr_image_size, image_size_origin=origin, copy_tensors=False
    )
    del sr_sd
    components.update(super_res_first=sr_first, super_res_last=sr_last)
    result.super_res_archs = sr_archs
    lines.append(
        f"super_res_first / super_res_last: {len(sr_first.state_dict())} tensors each, {_count(sr_first)} each"
    )
    for arch in sr_archs:
        lines += [f"  {note}" for note in arch.notes]

    text_encoder, tokenizer = _load_text_encoder(os.fspath(text_encoder_path), decoder_arch.clip_dim, text_ctx)
    components.update(text_encoder=text_encoder, tokenizer=tokenizer)
    lines.append(f"text_encoder / tokenizer: from {os.fspath(text_encoder_path)} (pad token '!' = id 0)")
    notes: list[str] = []
    if variant == IMAGE_VARIATION:
        image_encoder, feature_extractor = _load_image_encoder(
            os.fspath(image_encoder_path), decoder_arch.clip_dim, notes
        )
        components.update(image_encoder=image_encoder, feature_extractor=feature_extractor)
        lines.append(f"image_encoder: from {os.fspath(image_encoder_path)}")

    schedulers = build_scheduler_configs(
        prior_config=prior_config if variant == TXT2IMG else None,
        decoder_config=decoder_config,
        sr_config=sr_config,
        decoder_out_channels=decoder_arch.unet.out_channels,
        notes=notes,
    )
    if variant == TXT2IMG:
        components["prior_scheduler"] = UnCLIPScheduler(**schedulers["prior"])
    components["decoder_scheduler"] = UnCLIPScheduler(**schedulers["decoder"])
    components["super_res_scheduler"] = UnCLIPScheduler(**schedulers["super_res"])
    for stage in ("prior", "decoder", "super_res"):
        if f"{stage}_scheduler" in components:
            s = schedulers[stage]
            lines.append(
                f"{stage}_scheduler: {s['variance_type']}, {s['prediction_type']}, clip ±"
                f"{s['clip_sample_range']}, {s['beta_schedule']}, T={s['num_train_timesteps']}"
            )
    lines += [f"  {note}" for note in notes]

    # the project's pipeline classes write the folder, so it is exactly what `save_pretrained` gives
    from .. import UnCLIPImageVariationPipeline, UnCLIPPipeline

    pipeline_cls = UnCLIPPipeline if variant == TXT2IMG else UnCLIPImageVariationPipeline
    pipeline = pipeline_cls(**components)
    pipeline.save_pretrained(dump_path, safe_serialization=True)
    result.pipeline = pipeline
    lines.append(f"wrote {pipeline_cls.__name__} ({len(components)} components, safetensors weights) to {dump_path}")

    if push_to_hub:
        pipeline.push_to_hub(hub_model_id, private=private, commit_message="Karlo converted to diffusers")
        lines.append(f"pushed to the Hub as {hub_model_id}")
    return result
