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

    def summary(self) -> str:
        lines = [f"DALLE2-pytorch {self.kind} (weights: '{self.entry}'), release {self.source_version}"]
        for name, model in self.models.items():
            count = sum(p.numel() for p in model.parameters())
            lines.append(f"  {name}: {type(model).__name__}, {len(model.state_dict())} tensors, {count / 1e6:.2f}M parameters")
        for name, sched in self.schedulers.items():
            lines.append(
                f"  {name}: UnCLIPScheduler {sched['beta_schedule']}, {sched['num_train_timesteps']} steps, "
                f"{sched['prediction_type']}, {sched['variance_type']}, clip_sample={sched['clip_sample']}"
            )
        lines.append("  how each value was found:")
        lines.extend(f"    {note}" for note in self.notes)
        if self.dump_path:
            lines.append(f"  written to {self.dump_path} (safetensors)")
        return "\n".join(lines)


def sampler_notes(kind: str, config, schedulers: Mapping[str, dict]) -> list[str]:
    """
    Notes on the config's ``sample_timesteps``: below the training steps, DALLE2-pytorch samples with its DDIM
    sampler, which this package does not reproduce (it reproduces the DDPM sampler, with all training steps).
    """
    section = _section(config, kind) if config else {}
    sample_timesteps = section.get("sample_timesteps")
    if sample_timesteps is None:
        return []
    names = list(schedulers)
    if isinstance(sample_timesteps, (list, tuple)):
        per_stage = list(sample_timesteps)
    else:
        per_stage = [sample_timesteps] * len(names)
    notes = []
    for name, steps in zip(names, per_stage):
        total = schedulers[name]["num_train_timesteps"]
        if steps is not None and steps < total:
            notes.append(
                f"{name}: the config samples with sample_timesteps={steps} < {total} training steps, i.e. with "
                "DALLE2-pytorch's DDIM sampler, which is NOT reproduced here; this model is sampled exactly (DDPM) "
                f"with num_inference_steps={total}, and fewer steps run UnCLIPScheduler's respaced DDPM, a "
                "different sampler"
            )
    return notes


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
    notes.extend(sampler_notes(found_kind, given, schedulers))
    source = next(iter(models.values())).config.source_version
    result = Dalle2ConversionResult(found_kind, entry, source, models, schedulers, notes)
    if dump_path is not None:
        from ...schedulers import UnCLIPScheduler

        dump_path = os.fspath(dump_path)
        for name, sched in schedulers.items():  # build first: an invalid scheduler config fails before any write
            UnCLIPScheduler.from_config({k: v for k, v in sched.items() if k != "_class_name"})
        os.makedirs(dump_path, exist_ok=True)
        for name, model in models.items():
            model.save_pretrained(os.path.join(dump_path, name), safe_serialization=True)
        for name, sched in schedulers.items():
            UnCLIPScheduler.from_config({k: v for k, v in sched.items() if k != "_class_name"}).save_pretrained(
                os.path.join(dump_path, name)
            )
        result.dump_path = dump_path
    return result
