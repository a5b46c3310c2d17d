"""Converting one DALLE2-pytorch file end to end and writing the diffusers folders (``convert_dalle2_to_diffusers``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..common import ConversionError
from .checkpoints import DECODER, PRIOR, load_dalle2_checkpoint, read_version, select_state_dict
from .config import _section, load_config
from .decoder import convert_dalle2_decoder
from .prior import convert_dalle2_prior
from .schedulers import build_scheduler, ddim_scheduler_config
from .versions import format_version, parse_version


@dataclass
class Dalle2ConversionResult:
    """What :func:`convert_dalle2_to_diffusers` converted (and wrote, when a ``dump_path`` was given)."""

    kind: str
    entry: str
    source_version: str
    models: dict[str, Any]
    schedulers: dict[str, dict]
    notes: list[str] = field(default_factory=list)
    dump_path: str | None = None
    #: number of sampling steps of each scheduler: its training steps (DDPM), or ``sample_timesteps`` (DDIM)
    sampling_steps: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"DALLE2-pytorch {self.kind} (weights: '{self.entry}'), release {self.source_version}"]
        for name, model in self.models.items():
            count = sum(p.numel() for p in model.parameters())
            lines.append(f"  {name}: {type(model).__name__}, {len(model.state_dict())} tensors, {count / 1e6:.2f}M parameters")
        for name, sched in self.schedulers.items():
            total = sched["num_train_timesteps"]
            if sched.get("_class_name") == "Dalle2DDIMScheduler":
                steps = self.sampling_steps.get(name)
                sampler = (
                    f"DALLE2-pytorch's {sched['timestep_spacing']} DDIM in {steps} steps, eta={sched['eta']}, "
                    f"{sched['alphas_cumprod_table']}"
                )
            else:
                sampler = f"DALLE2-pytorch's DDPM in all {total} steps, {sched['variance_type']}"
            lines.append(
                f"  {name}: {sched.get('_class_name', 'UnCLIPScheduler')} {sched['beta_schedule']}, {total} training "
                f"steps, {sched['prediction_type']}, clip_sample={sched['clip_sample']}; samples with {sampler}"
            )
        lines.append("  how each value was found:")
        lines.extend(f"    {note}" for note in self.notes)
        if self.dump_path:
            lines.append(f"  written to {self.dump_path} (safetensors)")
        return "\n".join(lines)


#: the first release whose DDIM samplers are those of 1.15.6 (Dalle2DDIMScheduler): 1.10.3 changed the prior's
#: grid and the decoder's table, 1.12.0 the decoder's default eta (1 -> 0), 1.12.3 re-derived the noise of
#: epsilon models from the clipped x_0
DDIM_SINCE = (1, 12, 3)


def apply_sample_timesteps(
    kind: str, config, schedulers: dict[str, dict], source_version: str | None
) -> tuple[dict[str, int], list[str]]:
    """
    DALLE2-pytorch samples a stage with its DDIM sampler when the config's ``sample_timesteps`` is below the training
    steps (``DiffusionPrior.p_sample_loop`` / ``Decoder.p_sample_loop``), else with its DDPM sampler. The scheduler
    configs of the DDIM stages are replaced (in ``schedulers``) by :class:`Dalle2DDIMScheduler` configs: the prior's
    variant with eta 1, the decoder's with its ``ddim_sampling_eta`` (default 0) — for checkpoints of releases from
    :data:`DDIM_SINCE` on; older releases had other DDIM samplers, so their stages keep ``UnCLIPScheduler`` (DDPM)
    with a note. Returns ``(steps, notes)``: the number of sampling steps of every stage (the training steps for
    DDPM), and what was done.
    """
    section = _section(config, kind) if config else {}
    names = list(schedulers)
    steps = {name: schedulers[name]["num_train_timesteps"] for name in names}
    sample_timesteps = section.get("sample_timesteps")
    if sample_timesteps is None:
        return steps, []
    per_stage = list(sample_timesteps) if isinstance(sample_timesteps, (list, tuple)) else [sample_timesteps] * len(names)
    if len(per_stage) != len(names):
        raise ConversionError(f"the config's sample_timesteps={sample_timesteps} lists {len(per_stage)} values for {len(names)} U-Nets.")
    eta = 1.0 if kind == PRIOR else section.get("ddim_sampling_eta", 0.0)
    eta_source = "DiffusionPrior's DDIM" if kind == PRIOR else (
        "the config's ddim_sampling_eta" if "ddim_sampling_eta" in section else "DALLE2-pytorch's default ddim_sampling_eta"
    )
    notes = []
    for name, count in zip(names, per_stage):
        total = schedulers[name]["num_train_timesteps"]
        if count is None:
            continue
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= total:
            raise ConversionError(
                f"{name}: the config's sample_timesteps={count!r} must be an int between 1 and the {total} training "
                "steps (DALLE2-pytorch refuses it too)."
            )
        if count == total:
            continue
        if source_version is None or parse_version(source_version) < DDIM_SINCE:
            notes.append(
                f"{name}: the config samples with sample_timesteps={count} < {total} training steps, i.e. with the "
                f"DDIM sampler of DALLE2-pytorch {source_version}, which differs from that of "
                f"{format_version(DDIM_SINCE)} - 1.15.6 (the one Dalle2DDIMScheduler reproduces) and is NOT "
                f"reproduced: written as UnCLIPScheduler, exact (DDPM) with num_inference_steps={total}"
            )
            continue
        ddim = ddim_scheduler_config(schedulers[name], variant="prior" if kind == PRIOR else "decoder", eta=eta)
        try:
            build_scheduler(ddim).set_timesteps(count)
        except ValueError as error:
            raise ConversionError(f"{name}: sample_timesteps={count} cannot be sampled: {error}") from error
        schedulers[name], steps[name] = ddim, count
        notes.append(
            f"{name}: the config samples with sample_timesteps={count} < {total} training steps, i.e. with "
            f"DALLE2-pytorch's DDIM sampler: written as Dalle2DDIMScheduler (eta={float(eta)} from {eta_source}, "
            f"{ddim['alphas_cumprod_table']}), sampled with num_inference_steps={count}"
        )
    return steps, notes


def _stage_names(num_unets: int) -> list[tuple[str, str]]:
    names = [("decoder", "decoder_scheduler")]
    for i in range(1, num_unets):
        tag = "super_res" if i == 1 else f"super_res_{i}"
        names.append((f"{tag}_first", f"{tag}_scheduler"))
    return names


def convert_dalle2_to_diffusers(
    checkpoint_path: str | os.PathLike,
    dump_path: str | os.PathLike | None = None,
    *,
    kind: str = "auto",
    weights: str = "auto",
    config=None,
    source_version: str | None = None,
    image_sizes: tuple[int, ...] | None = None,
    allow_pickle: bool = False,
) -> Dalle2ConversionResult:
    """
    Convert one DALLE2-pytorch file. A prior becomes ``prior/`` (:class:`Dalle2PriorNetwork`) and
    ``prior_scheduler/``; a decoder becomes ``decoder/`` (+ ``decoder_scheduler/``) for its first U-Net and
    ``super_res_first/``, ``super_res_2_first/``, ... (+ ``super_res_scheduler/``, ``super_res_2_scheduler/``) for
    its upsamplers, named as this package's pipelines name their stages. Nothing is written unless everything
    converted.
    """
    container = load_dalle2_checkpoint(checkpoint_path, allow_pickle=allow_pickle)
    state_dict, found_kind, entry = select_state_dict(container, weights)
    if kind not in ("auto", PRIOR, DECODER):
        raise ConversionError(f"kind must be 'auto', 'prior' or 'decoder', got {kind!r}.")
    if kind != "auto" and kind != found_kind:
        raise ConversionError(f"--kind {kind} given, but the checkpoint holds a {found_kind} ({'net.*' if found_kind == PRIOR else 'unets.*'} keys).")
    version = read_version(container)
    embedded = container.get("config") if isinstance(container.get("config"), Mapping) else None
    given = load_config(config)
    if given is not None and embedded is not None:
        notes_cfg = "the --config file (the checkpoint's embedded config was ignored)"
    elif given is not None:
        notes_cfg = "the --config file"
    elif embedded is not None:
        given, notes_cfg = dict(embedded), "the config embedded in the checkpoint"
    else:
        notes_cfg = None

    if found_kind == PRIOR:
        model, sched, notes = convert_dalle2_prior(state_dict, version=version, source_version=source_version, config=given)
        models, schedulers = {"prior": model}, {"prior_scheduler": sched}
    else:
        unets, scheds, notes = convert_dalle2_decoder(
            state_dict, version=version, source_version=source_version, config=given, image_sizes=image_sizes
        )
        models, schedulers = {}, {}
        for (model_name, sched_name), unet, sched in zip(_stage_names(len(unets)), unets, scheds):
            models[model_name], schedulers[sched_name] = unet, sched
    if notes_cfg:
        notes.insert(0, f"config: {notes_cfg}")
    source = next(iter(models.values())).config.source_version
    sampling_steps, sampler_notes = apply_sample_timesteps(found_kind, given, schedulers, source)
    notes.extend(sampler_notes)
    result = Dalle2ConversionResult(found_kind, entry, source, models, schedulers, notes, sampling_steps=sampling_steps)
    if dump_path is not None:
        dump_path = os.fspath(dump_path)
        # build first: an invalid scheduler config fails before any write
        built = {name: build_scheduler(sched) for name, sched in schedulers.items()}
        os.makedirs(dump_path, exist_ok=True)
        for name, model in models.items():
            model.save_pretrained(os.path.join(dump_path, name), safe_serialization=True)
        for name, scheduler in built.items():
            scheduler.save_pretrained(os.path.join(dump_path, name))
        result.dump_path = dump_path
    return result
