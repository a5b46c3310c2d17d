"""
Classifier-free guidance of the DALLE2-pytorch ports (``guidance_null_branch = True``) inside the unCLIP stages.

DALLE2-pytorch does not encode an empty prompt for the unconditional branch: the network itself replaces the text
encodings, the text embedding and (prior) the noised image embedding by learned null tokens when a row is "dropped".
So under guidance the unconditional half of the batch gets the *conditional* inputs plus ``text_cond_drop_mask`` /
``image_cond_drop_mask``, and every output channel is guided (learned variance included), as DALLE2-pytorch's
``forward_with_cond_scale`` does. :mod:`.stages` calls these helpers only for models that carry the flag, so Karlo
models run exactly as before.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers.utils import logging

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


def refuse_unported_sampling(model, what: str) -> None:
    """Refuse the DALLE2-pytorch sampling features the stages do not reproduce."""
    config = model.config
    if config.get("self_cond"):
        raise ValueError(
            f"{what} is a DALLE2-pytorch network trained with self-conditioning (`self_cond=True`); its sampler feeds "
            "each step's x_0 estimate back into the network, which this pipeline's stages do not do."
        )
    if config.get("lowres_noise_cond"):
        raise ValueError(
            f"{what} is a DALLE2-pytorch upsampler with Imagen-style noise conditioning (`lowres_noise_cond=True`); "
            "this pipeline's super-resolution stage does not noise the low-resolution image."
        )


def warn_if_respaced(model, scheduler, num_inference_steps: int, stage: str) -> None:
    """Warn when a port samples with fewer steps than it was trained with (DALLE2-pytorch's DDIM is not ported)."""
    total = scheduler.config.get("num_train_timesteps")
    if uses_null_branch(model) and total and num_inference_steps < total:
        logger.warning(
            f"The {stage} is a DALLE2-pytorch port sampled with {num_inference_steps} of its {total} steps. "
            "DALLE2-pytorch samples with fewer steps through its own DDIM sampler, which is not reproduced here: "
            f"use {total} steps for its DDPM sampler exactly."
        )


def check_null_branch_decoder(pipe) -> None:
    """Refuse a DALLE2-pytorch decoder next to a ``text_proj`` that does not pass its inputs through, or one that
    needs sampling features the stages lack."""
    if not getattr(pipe.text_proj, "passes_through", False):
        raise ValueError(
            f"The decoder ({type(pipe.decoder).__name__}) reads the CLIP image embedding and text encodings itself, "
            "so the pipeline's `text_proj` must pass them through (UnCLIPIdentityTextProjModel), not "
            f"{type(pipe.text_proj).__name__}."
        )
    refuse_unported_sampling(pipe.decoder, "The decoder")


def null_branch_super_res_predictor(first, last, upscaled: torch.Tensor, text, guidance_scale: float):
    """
    ``predict`` of a DALLE2-pytorch upsampler. One reading the caption is guided like the decoder (``Decoder.sample``
    applies its ``cond_scale`` to every U-Net); for one that does not, the null branch equals the conditional one,
    so guidance would not change anything and is skipped.
    """
    refuse_unported_sampling(first, "A super-resolution U-Net")
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

    def predict(i, t, model_input):
        sample = torch.cat([model_input, upscaled], dim=1)
        sample = torch.cat([sample] * 2) if guided else sample
        output = first(sample=sample, timestep=t, **kwargs).sample
        return guide(output, guidance_scale) if guided else output

    return predict
