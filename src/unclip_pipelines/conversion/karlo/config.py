"""
What no Karlo tensor says outright: the key prefixes, Karlo v1.0.alpha's values for the sizes no shape reveals,
reading Karlo's yaml configs, and resolving each value from an argument, a config, or Karlo's default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from ..common import ConversionError


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
