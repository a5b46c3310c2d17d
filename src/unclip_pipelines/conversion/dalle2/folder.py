"""
A whole ``UnCLIPPipeline`` folder from a DALLE2-pytorch prior file, a decoder file and a local CLIP text model
(``convert_dalle2_pipeline``): the ports, their schedulers, the CLIP text encoder and tokenizer, and a pass-through
``text_proj``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..common import ConversionError
from .checkpoints import DECODER, PRIOR
from .pipeline import Dalle2ConversionResult, convert_dalle2_to_diffusers
from .schedulers import build_scheduler


@dataclass
class Dalle2PipelineConversionResult:
    """What :func:`convert_dalle2_pipeline` converted: the two files' results and the assembled pipeline."""

    prior: Dalle2ConversionResult
    decoder: Dalle2ConversionResult
    pipeline: Any
    notes: list[str] = field(default_factory=list)
    dump_path: str | None = None

    def summary(self) -> str:
        lines = [self.prior.summary(), self.decoder.summary(), "pipeline:"]
        lines.extend(f"  {note}" for note in self.notes)
        components = [name for name, value in self.pipeline.components.items() if value is not None]
        if self.dump_path:
            listed = ", ".join(components)
            lines.append(f"  wrote UnCLIPPipeline ({len(components)} components: {listed}) to {self.dump_path}")
        return "\n".join(lines)


def _load_text_encoder(path: str):
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    if not os.path.isdir(path):
        raise ConversionError(f"--text_encoder_path {path!r} is not a folder (a local CLIP text model + tokenizer).")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path)
        text_encoder = CLIPTextModelWithProjection.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ConversionError(
            f"--text_encoder_path {path!r} does not hold a CLIPTextModelWithProjection and its CLIPTokenizer: {error}"
        ) from error
    return text_encoder.eval(), tokenizer


def _check_text_encoder(text_encoder, tokenizer, prior, unets: dict, path: str, notes: list[str]) -> None:
    """The CLIP text model must produce what the prior and the U-Nets were trained on (DALLE2-pytorch's adapters)."""
    cfg = text_encoder.config
    problems = []
    dim = prior.config.embedding_dim
    if cfg.projection_dim != dim:
        problems.append(f"projection_dim={cfg.projection_dim}, but the prior's text / image embeddings are {dim} wide")
    if prior.config.condition_on_text_encodings and cfg.hidden_size != dim:
        problems.append(f"hidden_size={cfg.hidden_size}, but the prior reads {dim}-wide text encodings")
    for name, unet in unets.items():
        ucfg = unet.config
        if ucfg.cond_on_image_embeds and ucfg.image_embed_dim != dim:
            problems.append(f"{name} takes {ucfg.image_embed_dim}-wide image embeddings, the prior makes {dim}")
        if ucfg.cond_on_text_encodings and ucfg.text_embed_dim != cfg.hidden_size:
            problems.append(
                f"hidden_size={cfg.hidden_size}, but {name} reads {ucfg.text_embed_dim}-wide text encodings"
            )
    if problems:
        raise ConversionError(f"the CLIP text model in {path!r} does not fit the checkpoints: " + "; ".join(problems))
    longest = max([prior.config.max_text_len or 0] + [u.config.max_text_len for u in unets.values()])
    notes.append(
        f"text_encoder / tokenizer: from {path} (hidden {cfg.hidden_size}, projection {cfg.projection_dim}); the "
        f"tokenizer gives {tokenizer.model_max_length} tokens, the networks read up to {longest} (padded positions "
        "get their learned null tokens)"
    )


def convert_dalle2_pipeline(
    prior_checkpoint_path: str | os.PathLike,
    decoder_checkpoint_path: str | os.PathLike,
    text_encoder_path: str | os.PathLike,
    dump_path: str | os.PathLike | None = None,
    *,
    prior_config=None,
    decoder_config=None,
    weights: str = "auto",
    prior_source_version: str | None = None,
    decoder_source_version: str | None = None,
    image_sizes: tuple[int, ...] | None = None,
    allow_pickle: bool = False,
) -> Dalle2PipelineConversionResult:
    """
    Convert a DALLE2-pytorch prior file and decoder file (as :func:`convert_dalle2_to_diffusers` does each) and
    assemble an :class:`~unclip_pipelines.UnCLIPPipeline` with the CLIP text model of ``text_encoder_path`` (a local
    folder with a ``CLIPTextModelWithProjection`` and its ``CLIPTokenizer``, e.g. ``openai/clip-vit-large-patch14``
    for LAION's models) and an :class:`~unclip_pipelines.models.UnCLIPIdentityTextProjModel` as ``text_proj``.

    The folder's ``sampling_defaults.json`` sets every stage's steps to those DALLE2-pytorch samples it with: its
    training steps (DDPM, ``UnCLIPScheduler``), or the config's ``sample_timesteps`` when they are fewer (DDIM, a
    :class:`~unclip_pipelines.schedulers.Dalle2DDIMScheduler`). Upsamplers share the pipeline's one
    ``super_res_scheduler``, so all of them must have the same noise schedule and sampler. Nothing is written unless
    everything converted.
    """
    from ...models import UnCLIPIdentityTextProjModel
    from ...pipelines import UnCLIPPipeline

    common = {"weights": weights, "allow_pickle": allow_pickle}
    prior = convert_dalle2_to_diffusers(
        prior_checkpoint_path, kind=PRIOR, config=prior_config, source_version=prior_source_version, **common
    )
    decoder = convert_dalle2_to_diffusers(
        decoder_checkpoint_path,
        kind=DECODER,
        config=decoder_config,
        source_version=decoder_source_version,
        image_sizes=image_sizes,
        **common,
    )
    notes: list[str] = []
    unets = decoder.models
    sr_scheds = {name: cfg for name, cfg in decoder.schedulers.items() if name.startswith("super_res")}
    if len({tuple(sorted(cfg.items())) for cfg in sr_scheds.values()}) > 1:
        described = "; ".join(
            f"{name}: {cfg.get('_class_name')} {cfg['beta_schedule']}, {cfg['num_train_timesteps']} steps, "
            f"{cfg['prediction_type']}"
            for name, cfg in sr_scheds.items()
        )
        raise ConversionError(
            "the decoder's upsamplers have different noise schedules or samplers, but an UnCLIPPipeline runs its whole "
            f"super-resolution cascade with one `super_res_scheduler` ({described}). Convert the decoder file alone "
            "(--checkpoint_path) to get one scheduler folder per upsampler."
        )
    if len(unets) > 4:
        raise ConversionError(f"the decoder has {len(unets)} U-Nets; an UnCLIPPipeline holds at most 1 + 3 stages.")

    text_path = os.fspath(text_encoder_path)
    text_encoder, tokenizer = _load_text_encoder(text_path)
    _check_text_encoder(text_encoder, tokenizer, prior.models["prior"], unets, text_path, notes)

    text_proj = UnCLIPIdentityTextProjModel(clip_embeddings_dim=prior.models["prior"].config.embedding_dim)
    notes.append("text_proj: UnCLIPIdentityTextProjModel (the DALLE2-pytorch U-Net reads CLIP's outputs itself)")
    pipeline = UnCLIPPipeline(
        prior=prior.models["prior"],
        decoder=unets["decoder"],
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_proj=text_proj,
        super_res_first=unets.get("super_res_first"),
        super_res_last=None,
        prior_scheduler=build_scheduler(prior.schedulers["prior_scheduler"]),
        decoder_scheduler=build_scheduler(decoder.schedulers["decoder_scheduler"]),
        super_res_scheduler=build_scheduler(next(iter(sr_scheds.values()))) if sr_scheds else None,
        super_res_2_first=unets.get("super_res_2_first"),
        super_res_3_first=unets.get("super_res_3_first"),
    )
    defaults = {
        "prior_num_inference_steps": prior.sampling_steps["prior_scheduler"],
        "decoder_num_inference_steps": decoder.sampling_steps["decoder_scheduler"],
    }
    if sr_scheds:
        sr_steps = [decoder.sampling_steps[name] for name in sr_scheds]
        defaults["super_res_num_inference_steps"] = sr_steps[0] if len(set(sr_steps)) == 1 else sr_steps
    pipeline.sampling_defaults = defaults
    notes.append(
        f"sampling_defaults: {defaults} (DALLE2-pytorch's sampler of each stage: DDPM with all training steps, or "
        "DDIM with the config's sample_timesteps)"
    )
    result = Dalle2PipelineConversionResult(prior, decoder, pipeline, notes)
    if dump_path is not None:
        pipeline.save_pretrained(os.fspath(dump_path), safe_serialization=True)
        result.dump_path = os.fspath(dump_path)
    return result
