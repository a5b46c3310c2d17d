"""
Karlo's decoder (``PLMImUNet``) → diffusers' :class:`~diffusers.UNet2DConditionModel` and this package's
:class:`~unclip_pipelines.models.UnCLIPTextProjModel` (the decoder's CLIP conditioning projections).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..common import ConversionError, Rule, apply_rules, load_into_model
from .config import (
    DECODER_PREFIX,
    KARLO_DECODER_HEAD_CHANNELS,
    KARLO_DECODER_IMAGE_SIZE,
    _agree,
    _hparams,
    _pick,
    _require,
    load_karlo_config,
)
from .rules import _copy, _empty_model, _linear, _norm
from .unet import KarloUNetArch, _check_unet_against_config, _infer_unet, _unet_context, _unet_rules


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

    from ...models import UnCLIPTextProjModel

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
