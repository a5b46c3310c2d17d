"""
Tiny DALLE2-pytorch-format state dicts written without DALLE2-pytorch, for the converter's refusal tests.

The ports keep DALLE2-pytorch 1.15.6's module tree, so a port's state dict under ``net.`` / ``unets.{i}.`` plus the
noise-scheduler buffers *is* a 1.15.6 checkpoint. (Parity with the real package is tested in
``test_dalle2_parity.py``.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unclip_pipelines.conversion.dalle2 import beta_schedule_betas
from unclip_pipelines.models.dalle2 import Dalle2PriorNetwork, Dalle2UNet

PRIOR_KWARGS = {"embedding_dim": 32, "depth": 2, "dim_head": 16, "heads": 4, "num_timesteps": 50, "max_text_len": 8}
UNET_KWARGS = {
    "dim": 16,
    "dim_mults": (1, 2),
    "image_embed_dim": 32,
    "cond_on_image_embeds": True,
    "cond_dim": 24,
    "cond_on_text_encodings": True,
    "text_embed_dim": 20,
    "attn_heads": 2,
    "attn_dim_head": 8,
    "max_text_len": 8,
    "num_resnet_blocks": 1,
    "self_attn": (False, True),
    "out_channels": 6,
}


def noise_scheduler_buffers(prefix: str, schedule: str = "cosine", timesteps: int = 50) -> dict:
    betas = beta_schedule_betas(schedule, timesteps)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "posterior_variance": betas * (1.0 - prev) / (1.0 - alphas_cumprod),
        "p2_loss_weight": torch.ones(timesteps),
    }
    return {prefix + k: v.to(torch.float32) for k, v in buffers.items()}


def prior_state_dict(seed: int = 0, schedule: str = "cosine", **kwargs) -> dict:
    torch.manual_seed(seed)
    model = Dalle2PriorNetwork(**{**PRIOR_KWARGS, **kwargs})
    state = {"net." + k: v.clone() for k, v in model.state_dict().items()}
    state.update(noise_scheduler_buffers("noise_scheduler.", schedule, kwargs.get("num_timesteps", 50) or 50))
    return state


def decoder_state_dict(seed: int = 0, **kwargs) -> dict:
    torch.manual_seed(seed)
    model = Dalle2UNet(**{**UNET_KWARGS, **kwargs})
    state = {"unets.0." + k: v.clone() for k, v in model.state_dict().items()}
    state.update(noise_scheduler_buffers("noise_schedulers.0."))
    return state
