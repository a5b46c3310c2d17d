"""Converting a ``Decoder`` state dict into one :class:`~unclip_pipelines.models.dalle2.Dalle2UNet` per U-Net."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ...models.dalle2 import Dalle2UNet
from ..common import ConversionError, apply_rules, format_keys
from .checkpoints import DECODER
from .config import _resolve_version, _section
from .rules import _count_indices, _finish, _mapped_rules, _meta_model
from .schedulers import _consume_noise_scheduler, scheduler_config
from .unet import _infer_unet_config, _per, _unet_why
from .versions import DECODER_LAYOUT_DEFAULTS, DECODER_LAYOUT_RANGES, decoder_semantics


def _decoder_layout(keys) -> str:
    if any(k.endswith(".gamma") for k in keys):
        return "gamma_beta"
    if any(".cross_attn.fn." in k for k in keys):
        return "cross_attn_fn"
    return "cross_attn"


def convert_dalle2_decoder(
    state_dict: Mapping[str, torch.Tensor],
    *,
    version: str | None = None,
    source_version: str | None = None,
    config: Mapping | None = None,
    image_sizes: tuple[int, ...] | None = None,
) -> tuple[list[Dalle2UNet], list[dict], list[str]]:
    """
    Convert a ``Decoder`` state dict (``unets.{i}.*``, ``noise_schedulers.{i}.*``) into one :class:`Dalle2UNet`
    and one ``UnCLIPScheduler`` config per U-Net. Returns ``(unets, scheduler_configs, notes)``.
    """
    what = "DALLE2-pytorch decoder"
    notes: list[str] = []
    state = dict(state_dict)
    clip_keys = [k for k in state if k.startswith("clip.")]
    for key in clip_keys:
        del state[key]
    if clip_keys:
        notes.append(f"{len(clip_keys)} keys of the attached CLIP model (clip.*) were not converted")
    vae_keys = [k for k in state if k.startswith("vaes.")]
    if vae_keys:
        raise ConversionError(
            f"{what}: the decoder has VQGAN-VAE weights (latent diffusion), which are not supported:\n{format_keys(vae_keys)}"
        )
    num_unets = _count_indices(state, "unets.")
    schedules = [_consume_noise_scheduler(state, f"noise_schedulers.{u}.", f"{what} unet {u + 1}") for u in range(num_unets)]
    if _count_indices(state, "noise_schedulers.") > num_unets:
        raise ConversionError(f"{what}: more noise schedulers than unets.")
    lowres_noise = {}
    for u in range(num_unets):
        prefix = f"lowres_conds.{u}.noise_scheduler."
        if any(k.startswith(prefix) for k in state):
            lowres_noise[u] = _consume_noise_scheduler(state, prefix, f"{what} low-res conditioner {u + 1}")
    outside = [k for k in state if not k.startswith("unets.")]
    if outside:
        raise ConversionError(f"{what}: unexpected keys outside unets.* / noise_schedulers.* / clip.*:\n{format_keys(outside)}")

    layout = _decoder_layout(state)
    semantics = _resolve_version(
        "decoder", layout, version, source_version, notes, DECODER_LAYOUT_DEFAULTS, DECODER_LAYOUT_RANGES, decoder_semantics
    )
    decoder_cfg = _section(config, DECODER)
    unet_cfgs = list(decoder_cfg.get("unets") or [])
    if unet_cfgs and len(unet_cfgs) != num_unets:
        raise ConversionError(f"{what}: the config describes {len(unet_cfgs)} unets, the checkpoint has {num_unets}.")
    sizes = tuple(image_sizes) if image_sizes else tuple(decoder_cfg.get("image_sizes") or ())
    if not sizes and decoder_cfg.get("image_size") and num_unets == 1:
        sizes = (decoder_cfg["image_size"],)
    if sizes and len(sizes) != num_unets:
        raise ConversionError(f"{what}: {len(sizes)} image sizes given for {num_unets} unets.")
    if "timesteps" in decoder_cfg and any(t != decoder_cfg["timesteps"] for _, t in schedules):
        raise ConversionError(f"{what}: the config's timesteps={decoder_cfg['timesteps']} disagree with the saved schedules {schedules}.")
    config_schedules = decoder_cfg.get("beta_schedule")
    if config_schedules is not None:
        config_schedules = _per(config_schedules, num_unets)
        if tuple(config_schedules) != tuple(s for s, _ in schedules):
            raise ConversionError(f"{what}: the config's beta_schedule={list(config_schedules)} disagree with the saved schedules {[s for s, _ in schedules]}.")

    unets, scheds = [], []
    for u in range(num_unets):
        prefix = f"unets.{u}."
        unet = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if layout != "cross_attn":
            unet_view = {k.replace(".cross_attn.fn.", ".cross_attn."): v for k, v in unet.items()}
        else:
            unet_view = unet
        if semantics.layer_norm_type == "functional":
            unet_view = {re.sub(r"\.gamma$", ".g", re.sub(r"\.beta$", ".b", k)): v for k, v in unet_view.items()}
        unet_notes: list[str] = []
        cfg = _infer_unet_config(u, unet_view, semantics, unet_cfgs[u] if unet_cfgs else {}, decoder_cfg, unet_notes)
        if cfg["lowres_noise_cond"]:
            cfg["lowres_noise_sample_level"] = _lowres_noise_level(decoder_cfg, lowres_noise.get(u), what, u, unet_notes)
        if sizes:
            cfg["sample_size"] = int(sizes[u])
            unet_notes.append(f"sample_size = {sizes[u]} (from {'--image_sizes' if image_sizes else 'the config'})")
        elif u == 0:
            cfg["sample_size"] = 64
            unet_notes.append("sample_size = 64 (NOT inferable from the weights; LAION's decoders are 64 px — pass --image_sizes)")
        else:
            unet_notes.append("sample_size = None (NOT inferable; pass --image_sizes)")
        model = _meta_model(Dalle2UNet, cfg)
        model_state = model.state_dict()

        def to_source(key, prefix=prefix, model_state=model_state):
            name = key
            if semantics.layer_norm_type == "functional":
                if name.endswith(".g") and name[:-2] + ".b" in model_state:
                    name = name[:-2] + ".gamma"
                elif name.endswith(".b") and name[:-2] + ".g" in model_state:
                    name = name[:-2] + ".beta"
            if layout != "cross_attn" and ".cross_attn." in name:
                name = name.replace(".cross_attn.", ".cross_attn.fn.")
            return prefix + name

        rules = _mapped_rules(DECODER, model_state, to_source, lambda key, cfg=cfg: _unet_why(key, cfg))
        source_unet = {prefix + k: v for k, v in unet.items()}
        converted = apply_rules(source_unet, rules, f"{what} unet {u + 1}", context=f" (DALLE2-pytorch {cfg['source_version']})")
        model = _finish(model, converted[DECODER], f"{what} unet {u + 1}")
        unets.append(model)

        unet_cfg = unet_cfgs[u] if unet_cfgs else {}
        predict_x_start = _per(decoder_cfg.get("predict_x_start", False), num_unets)[u]
        predict_v = _per(decoder_cfg.get("predict_v", False), num_unets)[u]
        if decoder_cfg.get("use_dynamic_thres"):
            raise ConversionError(f"{what}: use_dynamic_thres=True (dynamic thresholding) is not available in this package's schedulers.")
        if decoder_cfg.get("learned_variance_constrain_frac"):
            raise ConversionError(f"{what}: learned_variance_constrain_frac=True is not available in this package's schedulers.")
        config_lv = decoder_cfg.get("learned_variance")
        learned_variance = cfg["out_channels"] == 2 * cfg["in_channels"]
        if config_lv is not None and bool(_per(config_lv, num_unets)[u]) != learned_variance:
            raise ConversionError(
                f"{what} unet {u + 1}: the config's learned_variance={_per(config_lv, num_unets)[u]} but to_out has "
                f"{cfg['out_channels']} channels for {cfg['in_channels']} image channels."
            )
        prediction = "v_prediction" if predict_v else ("sample" if predict_x_start else "epsilon")
        schedule, timesteps = schedules[u]
        scheds.append(
            scheduler_config(
                schedule, timesteps, prediction=prediction, learned_variance=learned_variance, clip_range=1.0,
                what=f"{what} unet {u + 1}",
            )
        )
        unet_notes.append(f"noise schedule: {schedule}, {timesteps} steps; prediction: {prediction}")
        if unet_cfg:
            unknown = set(unet_cfg) - _KNOWN_UNET_CONFIG
            if unknown:
                unet_notes.append(f"config keys not used by the conversion: {sorted(unknown)}")
        notes.append(f"unet {u + 1}:")
        notes.extend("  " + n for n in unet_notes)
    return unets, scheds, notes


def _lowres_noise_level(decoder_cfg: Mapping, schedule, what: str, u: int, notes: list[str]) -> float:
    """``lowres_noise_sample_level`` of a ``lowres_noise_cond`` upsampler (Decoder config, else 0.2), checked."""
    if schedule is not None and tuple(schedule) != ("linear", 1000):
        raise ConversionError(
            f"{what} unet {u + 1}: the low-res conditioner noises with a {schedule[0]} schedule of {schedule[1]} steps; "
            "the super-resolution stage reproduces DALLE2-pytorch's linear 1000-step one only."
        )
    level = decoder_cfg.get("lowres_noise_sample_level", 0.2)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level < 1:
        raise ConversionError(f"{what}: the config's lowres_noise_sample_level={level!r} must be a number in [0, 1).")
    source = "from the config" if "lowres_noise_sample_level" in decoder_cfg else "NOT inferable; DALLE2-pytorch default"
    notes.append(
        f"lowres_noise_sample_level = {level} ({source}): Imagen-style noise conditioning, the super-resolution stage "
        f"noises the low-res image to step {int(level * 1000)} of a linear 1000-step schedule and passes that level"
    )
    return float(level)


_KNOWN_UNET_CONFIG = {
    "dim", "dim_mults", "image_embed_dim", "text_embed_dim", "cond_on_text_encodings", "cond_dim", "channels",
    "self_attn", "attn_dim_head", "attn_heads", "init_cross_embed", "init_cross_embed_kernel_sizes",
    "init_conv_kernel_size", "num_time_tokens", "num_image_tokens", "num_resnet_blocks", "resnet_groups",
    "resnet_weight_standardization", "sparse_attn", "memory_efficient", "scale_skip_connection",
    "cosine_sim_cross_attn", "cosine_sim_self_attn", "cross_embed_downsample", "cross_embed_downsample_kernel_sizes",
    "pixel_shuffle_upsample", "max_text_len", "self_cond", "final_conv_kernel_size", "init_dim",
}
