"""Converting all of Karlo's checkpoints and writing the diffusers folder (``convert_karlo_to_diffusers``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..common import ConversionError
from .checkpoints import load_clip_stats, load_karlo_state_dict
from .config import load_karlo_config
from .decoder import KarloDecoderArch, convert_decoder
from .encoders import _load_image_encoder, _load_text_encoder
from .prior import KarloPriorArch, convert_prior
from .schedulers import build_scheduler_configs
from .super_res import convert_super_res
from .unet import KarloUNetArch


TXT2IMG = "txt2img"
IMAGE_VARIATION = "image_variation"
VARIANTS = (TXT2IMG, IMAGE_VARIATION)


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
    from ...schedulers import UnCLIPScheduler

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
    from ... import UnCLIPImageVariationPipeline, UnCLIPPipeline

    pipeline_cls = UnCLIPPipeline if variant == TXT2IMG else UnCLIPImageVariationPipeline
    pipeline = pipeline_cls(**components)
    pipeline.save_pretrained(dump_path, safe_serialization=True)
    result.pipeline = pipeline
    lines.append(f"wrote {pipeline_cls.__name__} ({len(components)} components, safetensors weights) to {dump_path}")

    if push_to_hub:
        pipeline.push_to_hub(hub_model_id, private=private, commit_message="Karlo converted to diffusers")
        lines.append(f"pushed to the Hub as {hub_model_id}")
    return result
