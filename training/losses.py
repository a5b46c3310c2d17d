"""The image-diffusion loss shared by the decoder and the upsamplers: target by prediction type, Min-SNR weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def add_prediction_arguments(group) -> None:
    """``--prediction_type`` and ``--snr_gamma`` for an image stage."""
    group.add_argument(
        "--prediction_type", choices=PREDICTION_TYPES, default="v_prediction",
        help="what the U-Net predicts: the noise (GLIDE, Karlo), v (default: no colour drift at few steps) or x_0",
    )
    group.add_argument("--snr_gamma", type=float, help="Min-SNR loss weighting (e.g. 5.0); off by default")


def diffusion_loss(scheduler, prediction, images, noise, timesteps, snr_gamma: float | None = None) -> torch.Tensor:
    """Mean squared error against the scheduler's ``prediction_type`` target, optionally Min-SNR-γ weighted."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(images, noise, timesteps)
    elif prediction_type == "sample":
        target = images
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES}")
    loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=tuple(range(1, images.ndim)))
    if snr_gamma:
        snr = compute_snr(scheduler, timesteps).to(loss.device)
        clipped = torch.clamp(snr, max=snr_gamma)
        # Min-SNR-γ (Hang et al. 2023) expressed for each target: ε: min(snr, γ)/snr, v: min(snr, γ)/(snr + 1), x_0: min(snr, γ)
        loss = loss * {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[prediction_type]
    return loss.mean()
