"""
Classifier-free guidance of the DALLE2-pytorch ports (``guidance_null_branch = True``) inside the unCLIP stages.

DALLE2-pytorch does not encode an empty prompt for the unconditional branch: the network itself replaces the text
encodings, the text embedding and (prior) the noised image embedding by learned null tokens when a row is "dropped".
So under guidance the unconditional half of the batch gets the *conditional* inputs plus ``text_cond_drop_mask`` /
``image_cond_drop_mask``, and every output channel is guided (learned variance included), as DALLE2-pytorch's
``forward_with_cond_scale`` does. :mod:`.stages` calls these helpers only for models that carry the flag, so Karlo
models run exactly as before.

The other sampling details of DALLE2-pytorch live here too: self-conditioning (:class:`SelfConditionedPredictor`),
the Imagen-style noising of an upsampler's low-resolution image (:func:`noise_lowres_condition`), and the warning
when a port is sampled with fewer steps by a scheduler that is not DALLE2-pytorch's DDIM (:func:`warn_if_respaced`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor

from ..schedulers.scheduling_dalle2_ddim import DALLE2_DDIM_VARIANTS, Dalle2DDIMScheduler
from ..schedulers.scheduling_unclip import UnCLIPScheduler
from .denoising import guide

logger = logging.get_logger(__name__)


def uses_null_branch(model) -> bool:
    """Whether ``model`` runs classifier-free guidance with its own null branch (the DALLE2-pytorch ports)."""
    return bool(getattr(model, "guidance_null_branch", False))


def null_branch_masks(batch_size: int, device) -> dict:
    """The drop masks of a ``[unconditional, conditional]`` batch of ``2 * batch_size`` rows."""
    drop = torch.arange(2 * batch_size, device=device) < batch_size
    return {"text_cond_drop_mask": drop, "image_cond_drop_mask": drop}


def conditional_twice(text):
    """``[cond, cond]`` of a :class:`~.stages.TextConditioning`: a guided batch whose null half the model makes."""
    cond = text.conditional()
    embeds, hidden, mask = (torch.cat([x, x]) for x in (cond.embeds, cond.hidden_states, cond.mask))
    return dataclasses.replace(cond, embeds=embeds, hidden_states=hidden, mask=mask, guided=True)


def warn_if_respaced(model, scheduler, num_inference_steps: int, stage: str) -> None:
    """
    Warn when a port samples with fewer steps than it was trained with through a scheduler other than
    :class:`~unclip_pipelines.schedulers.Dalle2DDIMScheduler` (which reproduces DALLE2-pytorch's DDIM sampler).
    """
    total = scheduler.config.get("num_train_timesteps")
    if isinstance(scheduler, Dalle2DDIMScheduler) or not uses_null_branch(model):
        return
    if total and num_inference_steps < total:
        variant = "prior" if stage == "prior" else "decoder"
        settings = DALLE2_DDIM_VARIANTS[variant]
        logger.warning(
            f"The {stage} is a DALLE2-pytorch port sampled with {num_inference_steps} of its {total} steps by "
            f"{type(scheduler).__name__}, which is not DALLE2-pytorch's sampler. Use {total} steps for its DDPM "
            f"sampler exactly, or its DDIM sampler: Dalle2DDIMScheduler.from_config(scheduler.config, "
            + ", ".join(f"{key}={value!r}" for key, value in settings.items())
            + (")" if variant == "prior" else ", eta=<the decoder's ddim_sampling_eta>)")
        )


class SelfConditionedPredictor:
    """
    ``predict(i, t, model_input)`` of a self-conditioned port (``self_cond=True``): each call passes the previous
    step's x_0 estimate (``None`` at the first step, which the network turns into zeros), as DALLE2-pytorch's samplers
    do; under guidance both halves of the batch get it. :func:`~.denoising.denoise` hands every scheduler output to
    :meth:`observe_step`, whose clipped ``pred_original_sample`` is DALLE2-pytorch's ``x_start``.
    """

    def __init__(self, predict: Callable, guided: bool):
        self._predict, self._guided = predict, guided
        self.x_start: torch.Tensor | None = None

    def __call__(self, i, t, model_input):
        self_cond = self.x_start
        if self_cond is not None and self._guided:
            self_cond = torch.cat([self_cond, self_cond])
        return self._predict(i, t, model_input, self_cond=self_cond)

    def observe_step(self, output) -> None:
        x_start = getattr(output, "pred_original_sample", None)
        if x_start is None:
            raise ValueError(
                f"A self-conditioned DALLE2-pytorch port feeds each step's x_0 estimate back into the network, but "
                f"{type(output).__name__} carries no `pred_original_sample`: sample it with UnCLIPScheduler or "
                "Dalle2DDIMScheduler."
            )
        self.x_start = x_start


def self_conditioned(model, predict: Callable, guided: bool) -> Callable:
    """``predict`` wrapped in a :class:`SelfConditionedPredictor` for a self-conditioned port, else ``predict``."""
    if uses_null_branch(model) and model.config.get("self_cond"):
        return SelfConditionedPredictor(predict, guided)
    return predict


def lowres_noise_level(model) -> int | None:
    """
    The timestep at which a DALLE2-pytorch upsampler with Imagen-style noise conditioning (``lowres_noise_cond``)
    samples its noised low-resolution image: ``int(lowres_noise_sample_level * 1000)``, as ``Decoder.sample``.
    """
    if not (uses_null_branch(model) and model.config.get("lowres_noise_cond")):
        return None
    return int(model.config.get("lowres_noise_sample_level", 0.2) * LOWRES_NOISE_TIMESTEPS)


#: DALLE2-pytorch's ``LowresConditioner`` noises with a linear schedule of 1000 steps
LOWRES_NOISE_TIMESTEPS = 1000


def noise_lowres_condition(model, upscaled: torch.Tensor, generator) -> torch.Tensor:
    """
    ``upscaled`` noised to :func:`lowres_noise_level` with the conditioner's own schedule (linear, 1000 steps), as
    ``Decoder.sample`` does for a ``lowres_noise_cond`` upsampler before drawing the stage's noise; unchanged for any
    other model.
    """
    level = lowres_noise_level(model)
    if level is None:
        return upscaled
    scheduler = UnCLIPScheduler(num_train_timesteps=LOWRES_NOISE_TIMESTEPS, beta_schedule="linear")
    noise = randn_tensor(upscaled.shape, generator=generator, device=upscaled.device, dtype=upscaled.dtype)
    return scheduler.add_noise(upscaled, noise, torch.tensor([level]))


def refuse_port_inversion(model, stage: str) -> None:
    """
    Refuse DDIM inversion through a self-conditioned or noise-conditioned port: its sampler feeds back x_0 estimates
    (or noises its low-res input) that a run backwards does not reproduce.
    """
    if uses_null_branch(model) and (model.config.get("self_cond") or lowres_noise_level(model) is not None):
        raise ValueError(
            f"The {stage} is a self-conditioned or noise-conditioned DALLE2-pytorch port, and DDIM inversion does not "
            "reproduce its sampler; invert with `invert_super_res=False` (upsamplers), or a model without "
            "`self_cond` / `lowres_noise_cond`."
        )


def check_null_branch_decoder(pipe) -> None:
    """Refuse a DALLE2-pytorch decoder next to a ``text_proj`` that does not pass its inputs through."""
    if not getattr(pipe.text_proj, "passes_through", False):
        raise ValueError(
            f"The decoder ({type(pipe.decoder).__name__}) reads the CLIP image embedding and text encodings itself, "
            "so the pipeline's `text_proj` must pass them through (UnCLIPIdentityTextProjModel), not "
            f"{type(pipe.text_proj).__name__}."
        )


def null_branch_super_res_predictor(first, last, upscaled: torch.Tensor, text, guidance_scale: float):
    """
    ``predict`` of a DALLE2-pytorch upsampler. One reading the caption is guided like the decoder (``Decoder.sample``
    applies its ``cond_scale`` to every U-Net); for one that does not, the null branch equals the conditional one,
    so guidance would not change anything and is skipped. A ``lowres_noise_cond`` upsampler also gets its noise
    level (``upscaled`` must then be :func:`noise_lowres_condition`'s output), a self-conditioned one its previous
    x_0 estimate.
    """
    if last is not None:
        raise ValueError("A DALLE2-pytorch upsampler runs every step of its stage: it takes no `super_res_*_last`.")
    kwargs, guided = {}, False
    if first.config.get("cond_on_text_encodings"):
        if text is None:
            raise ValueError("This DALLE2-pytorch upsampler is conditioned on the caption: pass its text encodings.")
        guided = guidance_scale > 1.0 and text.guided
        text = conditional_twice(text) if guided else text.conditional()
        kwargs = {"encoder_hidden_states": text.hidden_states, "attention_mask": text.mask}
        if guided:
            kwargs.update(null_branch_masks(upscaled.shape[0], upscaled.device))
    level = lowres_noise_level(first)
    if level is not None:
        kwargs["lowres_noise_level"] = torch.tensor(level, device=upscaled.device)

    def predict(i, t, model_input, self_cond=None):
        sample = torch.cat([model_input, upscaled], dim=1)
        sample = torch.cat([sample] * 2) if guided else sample
        extra = {"self_cond": self_cond} if self_cond is not None else {}
        output = first(sample=sample, timestep=t, **kwargs, **extra).sample
        return guide(output, guidance_scale) if guided else output

    return self_conditioned(first, predict, guided)
