"""
Karlo's guided-diffusion ``UNetModel``, shared by the decoder and the upsampler: its architecture as read from the
weights (:class:`KarloUNetArch`), the check against a yaml config, and the key mapping onto diffusers' unCLIP UNets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..common import ConversionError, Rule
from .config import _KARLO_DEFAULT_CHANNEL_MULT, KARLO_DECODER_HEAD_CHANNELS, _agree, _count_indices, _require
from .rules import _conv, _fused_heads, _linear, _norm


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


def _unet_context(u: KarloUNetArch) -> str:
    return (
        f" (num_channels={u.model_channels}, channel_mult={u.channel_mult}, num_res_blocks={u.num_res_blocks}, "
        f"attention levels={u.attention_levels}, middle attention={u.middle_attention})"
    )
