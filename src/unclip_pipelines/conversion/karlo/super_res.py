"""Karlo's 64→256 upsampler (``model_first_steps`` and ``model_last_step``) → two diffusers ``UNet2DModel``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..common import ConversionError, apply_rules, check_key_sets, load_into_model
from .config import KARLO_SR_IMAGE_SIZE, SR_FIRST_PREFIX, SR_LAST_PREFIX, _hparams, _pick, load_karlo_config
from .rules import _empty_model
from .unet import KarloUNetArch, _check_unet_against_config, _infer_unet, _unet_context, _unet_rules


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
