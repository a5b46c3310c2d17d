"""``UnCLIPScheduler`` configs for the three stages, from the ``diffusion`` sections of Karlo's yaml configs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..common import ConversionError
from .config import PRIOR_CLIP_SAMPLE_RANGE, load_karlo_config


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
