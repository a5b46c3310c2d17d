"""DALLE2-pytorch's noise schedules: recomputing them, recognising saved ``betas``, and the scheduler configs
(``UnCLIPScheduler`` for its DDPM sampler, ``Dalle2DDIMScheduler`` for its DDIM samplers)."""

from __future__ import annotations

import math

import torch

from ...schedulers.scheduling_dalle2_ddim import DALLE2_DDIM_VARIANTS
from ..common import ConversionError, format_keys

NOISE_SCHEDULER_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "p2_loss_weight",
)
#: DALLE2-pytorch's beta schedules → this package's UnCLIPScheduler ``beta_schedule`` (the same betas)
SUPPORTED_SCHEDULES = {
    "cosine": "squaredcos_cap_v2",
    "linear": "linear",
    "quadratic": "quadratic",
    "sigmoid": "sigmoid",
    "jsd": "jsd",
}


def beta_schedule_betas(name: str, timesteps: int) -> torch.Tensor:
    """DALLE2-pytorch's beta schedules (float64, as it computes them)."""
    t = timesteps
    scale = 1000 / t
    if name == "cosine":
        s = 0.008
        x = torch.linspace(0, t, t + 1, dtype=torch.float64)
        alphas_cumprod = torch.cos(((x / t) + s) / (1 + s) * math.pi * 0.5) ** 2
        alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
        return torch.clip(1 - (alphas_cumprod[1:] / alphas_cumprod[:-1]), 0, 0.999)
    if name == "linear":
        return torch.linspace(scale * 0.0001, scale * 0.02, t, dtype=torch.float64)
    if name == "quadratic":
        return torch.linspace((scale * 0.0001) ** 0.5, (scale * 0.02) ** 0.5, t, dtype=torch.float64) ** 2
    if name == "sigmoid":
        betas = torch.linspace(-6, 6, t, dtype=torch.float64)
        return torch.sigmoid(betas) * (scale * 0.02 - scale * 0.0001) + scale * 0.0001
    if name == "jsd":
        return (1.0 / torch.linspace(t, 1, t)).to(torch.float64)
    raise ConversionError(f"unknown DALLE2-pytorch beta schedule {name!r}")


def detect_beta_schedule(betas: torch.Tensor, what: str) -> tuple[str, int]:
    """Which of DALLE2-pytorch's schedules produced the saved ``betas`` buffer: ``(name, timesteps)``."""
    betas = betas.detach().to(torch.float64).reshape(-1)
    timesteps = betas.shape[0]
    for name in ("cosine", "linear", "quadratic", "sigmoid", "jsd"):
        reference = beta_schedule_betas(name, timesteps).to(torch.float32).to(torch.float64)
        if torch.allclose(betas, reference, rtol=1e-5, atol=1e-7):
            return name, timesteps
    raise ConversionError(
        f"{what}: the saved noise schedule (betas of {timesteps} steps, first {betas[:3].tolist()}) is none of "
        "DALLE2-pytorch's cosine / linear / quadratic / sigmoid / jsd schedules."
    )


def _consume_noise_scheduler(state_dict: dict, prefix: str, what: str) -> tuple[str, int]:
    keys = {k for k in state_dict if k.startswith(prefix)}
    names = {k[len(prefix) :] for k in keys}
    unknown = names - set(NOISE_SCHEDULER_BUFFERS)
    if unknown:
        raise ConversionError(f"{what}: unexpected noise-scheduler buffers:\n{format_keys(prefix + n for n in unknown)}")
    if "betas" not in names:
        raise ConversionError(
            f"{what}: the checkpoint has no {prefix}betas buffer, so its noise schedule is unknown (missing key "
            f"{prefix}betas)."
        )
    schedule = detect_beta_schedule(state_dict[prefix + "betas"], what)
    for key in keys:
        del state_dict[key]
    return schedule


def scheduler_config(
    schedule: str, timesteps: int, *, prediction: str, learned_variance: bool, clip_range: float | None, what: str
) -> dict:
    """The :class:`~unclip_pipelines.schedulers.UnCLIPScheduler` config of one DALLE2-pytorch noise schedule."""
    problems = []
    if schedule not in SUPPORTED_SCHEDULES:
        problems.append(f"the '{schedule}' beta schedule (UnCLIPScheduler supports {sorted(SUPPORTED_SCHEDULES)})")
    else:
        betas = beta_schedule_betas(schedule, timesteps)
        if float(betas.max()) > 1:
            problems.append(
                f"the '{schedule}' schedule with {timesteps} steps has betas up to {float(betas.max()):.4g} > 1 "
                "(DALLE2-pytorch scales it by 1000 / timesteps), which is no diffusion process"
            )
        elif prediction == "epsilon" and float(betas.max()) >= 1:
            problems.append(
                f"noise prediction with the '{schedule}' schedule of {timesteps} steps, whose last beta is 1: at the "
                "first sampling step ᾱ = 0, so x_0 cannot be recovered from the predicted noise (DALLE2-pytorch's "
                "own sampler returns NaN there)"
            )
    if problems:
        raise ConversionError(
            f"{what}: the weights convert, but this package's UnCLIPScheduler cannot reproduce the model's sampler: "
            + "; ".join(problems)
            + ". Nothing was written."
        )
    scale = 1000 / timesteps  # DALLE2-pytorch's ranged schedules, with its own order of operations
    config = {
        "_class_name": "UnCLIPScheduler",
        "num_train_timesteps": timesteps,
        "variance_type": "learned_range" if learned_variance else "fixed_small_log",
        "clip_sample": clip_range is not None,
        "clip_sample_range": float(clip_range if clip_range is not None else 1.0),
        "prediction_type": prediction,
        "beta_schedule": SUPPORTED_SCHEDULES[schedule],
        "beta_start": scale * 0.0001,
        "beta_end": scale * 0.02,
    }
    return config


def ddim_scheduler_config(config: dict, *, variant: str, eta: float) -> dict:
    """
    The :class:`~unclip_pipelines.schedulers.Dalle2DDIMScheduler` config of a stage that DALLE2-pytorch samples with
    its DDIM sampler (``sample_timesteps`` below the training steps): ``config`` (an ``UnCLIPScheduler`` config from
    :func:`scheduler_config`) keeps its noise schedule, prediction type and clipping; ``variant`` is ``"prior"``
    (``DiffusionPrior.p_sample_loop_ddim``, eta 1) or ``"decoder"`` (``Decoder.p_sample_loop_ddim``).
    """
    keep = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type", "clip_sample",
            "clip_sample_range")
    return {
        "_class_name": "Dalle2DDIMScheduler",
        **{key: config[key] for key in keep},
        **DALLE2_DDIM_VARIANTS[variant],
        "eta": float(eta),
    }


def build_scheduler(config: dict):
    """The scheduler a config of :func:`scheduler_config` / :func:`ddim_scheduler_config` describes."""
    from ...schedulers import Dalle2DDIMScheduler, UnCLIPScheduler

    classes = {"UnCLIPScheduler": UnCLIPScheduler, "Dalle2DDIMScheduler": Dalle2DDIMScheduler}
    cls = classes[config.get("_class_name", "UnCLIPScheduler")]
    return cls.from_config({k: v for k, v in config.items() if k != "_class_name"})
