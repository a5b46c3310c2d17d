"""
The stages of unCLIP, written once and mixed into every pipeline that runs them.

CLIP text encoding -> prior (text -> CLIP image embedding) -> decoder (image embedding [+ caption] -> 64 px image)
-> super-resolution cascade (x4 per stage). The mixins only read pipeline components by their Karlo names
(``prior``, ``prior_scheduler``, ``decoder``, ``text_proj``, ``decoder_scheduler``, ``super_res_first``, ...), so a
pipeline made of any subset of them can run the stages it has.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import logging

from ..manipulations import best_of_candidates
from .denoising import as_unclip_scheduler, denoise, guide, prepare_latents
from .null_branch import (
    check_null_branch_decoder,
    conditional_twice,
    noise_lowres_condition,
    null_branch_masks,
    null_branch_super_res_predictor,
    self_conditioned,
    uses_null_branch,
    warn_if_respaced,
)
from .validation import check_callback_inputs, check_eta, check_guidance, check_output_type, check_steps

logger = logging.get_logger(__name__)

#: component names of each super-resolution stage: (model for all steps but the last, model for the last step).
#: The first pair is Karlo's; the "last" model is optional in every stage.
SUPER_RES_STAGES = (
    ("super_res_first", "super_res_last"),
    ("super_res_2_first", "super_res_2_last"),
    ("super_res_3_first", "super_res_3_last"),
)
SUPER_RES_COMPONENTS = [name for pair in SUPER_RES_STAGES for name in pair] + ["super_res_scheduler"]


@dataclass
class TextConditioning:
    """CLIP text encoding of a batch; under guidance the unconditional rows come first (``[uncond, cond]``)."""

    embeds: torch.Tensor
    hidden_states: torch.Tensor
    mask: torch.Tensor
    guided: bool

    def conditional(self) -> TextConditioning:
        """The conditional half only (for a stage that runs without guidance)."""
        if not self.guided:
            return self
        half = self.embeds.shape[0] // 2
        return TextConditioning(self.embeds[half:], self.hidden_states[half:], self.mask[half:], guided=False)

    def repeat(self, times: int) -> TextConditioning:
        """Every row repeated ``times`` times in place (the ``[uncond, cond]`` layout is kept)."""
        if times == 1:
            return self
        embeds, hidden, mask = (x.repeat_interleave(times, dim=0) for x in (self.embeds, self.hidden_states, self.mask))
        return TextConditioning(embeds, hidden, mask, guided=self.guided)


class TextEncodingMixin:
    """Encodes prompts with the pipeline's CLIP ``tokenizer`` and ``text_encoder``."""

    def _tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        max_length = self.tokenizer.model_max_length
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        full = self.tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
        if full.shape[-1] > max_length:
            removed = self.tokenizer.batch_decode(full[:, max_length - 1 : -1])
            logger.warning(
                f"Prompts longer than CLIP's {max_length} tokens were truncated; this part was dropped: {removed}. "
                "Shorten the prompt to keep it."
            )
        return tokens.input_ids, tokens.attention_mask.bool()

    def _run_text_encoder(self, prompts: list[str], device: torch.device):
        input_ids, mask = self._tokenize(prompts)
        output = self.text_encoder(input_ids.to(device))
        return output.text_embeds, output.last_hidden_state, mask.to(device)

    def encode_prompt(
        self,
        prompt: list[str] | None,
        device: torch.device,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: list[str] | None = None,
        text_model_output=None,
        text_attention_mask: torch.Tensor | None = None,
    ) -> TextConditioning:
        """
        Encode ``prompt`` (or take precomputed ``text_model_output = (text_embeds, last_hidden_state)`` with its
        ``text_attention_mask``), repeated ``num_images_per_prompt`` times. Under guidance the unconditional rows
        encode ``negative_prompt`` (default: the empty caption, as Karlo was trained).

        When every guided model of the pipeline (``prior``, ``decoder``) is a DALLE2-pytorch port
        (:func:`uses_null_branch`), nothing is encoded for the unconditional rows: they repeat the conditional ones,
        which the models replace by their learned null conditioning. Such models take no ``negative_prompt``.
        """
        guided_models = [getattr(self, name, None) for name in ("prior", "decoder")]
        null_branch = [uses_null_branch(model) for model in guided_models if model is not None]
        if negative_prompt is not None and any(null_branch):
            raise ValueError(
                "`negative_prompt` cannot be used with DALLE2-pytorch ports: their classifier-free guidance replaces "
                "the unconditional branch's conditioning by learned null tokens, so there is no prompt to negate."
            )
        if text_model_output is None:
            embeds, hidden, mask = self._run_text_encoder(prompt, device)
        else:
            embeds, hidden = text_model_output[0], text_model_output[1]
            if text_attention_mask is None:
                raise ValueError("`text_attention_mask` is required with `text_model_output`.")
            mask = text_attention_mask.to(device=device, dtype=torch.bool)
        batch_size = embeds.shape[0]
        embeds, hidden, mask = (x.repeat_interleave(num_images_per_prompt, dim=0) for x in (embeds, hidden, mask))
        if not do_classifier_free_guidance:
            return TextConditioning(embeds, hidden, mask, guided=False)
        if null_branch and all(null_branch):
            return conditional_twice(TextConditioning(embeds, hidden, mask, guided=False))

        uncond_prompts = negative_prompt if negative_prompt is not None else [""] * batch_size
        u_embeds, u_hidden, u_mask = self._run_text_encoder(uncond_prompts, device)
        u_embeds, u_hidden, u_mask = (x.repeat_interleave(num_images_per_prompt, dim=0) for x in (u_embeds, u_hidden, u_mask))
        return TextConditioning(
            torch.cat([u_embeds, embeds]), torch.cat([u_hidden, hidden]), torch.cat([u_mask, mask]), guided=True
        )


class PriorStageMixin:
    """Samples CLIP image embeddings with the diffusion ``prior`` and ``prior_scheduler``."""

    def run_prior(
        self,
        text: TextConditioning,
        num_inference_steps: int,
        guidance_scale: float,
        generator=None,
        latents: torch.Tensor | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=None,
        num_candidates: int = 1,
    ) -> torch.Tensor:
        """
        Returns ``(B, embedding_dim)`` image embeddings in CLIP space (``clip_mean``/``clip_std`` undone).

        With ``num_candidates = N > 1`` (paper §2.2: N = 2), N embeddings are sampled per row (as if
        ``num_images_per_prompt`` were N times larger; ``latents`` then has ``B * N`` rows) and the one with the
        highest dot product with the normalised CLIP text embedding is kept (:func:`best_of_candidates`).
        """
        text_embeds = text.conditional().embeds
        if num_candidates > 1:
            text = text.repeat(num_candidates)
            if isinstance(generator, list):
                generator = [g for g in generator for _ in range(num_candidates)]
        guided = guidance_scale > 1.0 and text.guided
        text = text if guided else text.conditional()
        batch_size = text.embeds.shape[0] // (2 if guided else 1)
        drop_masks = {}
        if uses_null_branch(self.prior):
            warn_if_respaced(self.prior, self.prior_scheduler, num_inference_steps, "prior")
            if guided:
                text = conditional_twice(text)
                drop_masks = null_branch_masks(batch_size, text.embeds.device)
        latents = prepare_latents(
            (batch_size, self.prior.config.embedding_dim),
            text.embeds.dtype,
            text.embeds.device,
            generator,
            latents,
            self.prior_scheduler,
            "prior_latents",
        )

        def predict(i, t, model_input, self_cond=None):
            model_input = torch.cat([model_input] * 2) if guided else model_input
            prediction = self.prior(
                model_input,
                timestep=t,
                proj_embedding=text.embeds,
                encoder_hidden_states=text.hidden_states,
                attention_mask=text.mask,
                **drop_masks,
                **({"self_cond": self_cond} if self_cond is not None else {}),
            ).predicted_image_embedding
            return guide(prediction, guidance_scale) if guided else prediction

        latents = denoise(
            self,
            stage="prior",
            scheduler=self.prior_scheduler,
            latents=latents,
            num_inference_steps=num_inference_steps,
            predict=self_conditioned(self.prior, predict, guided),
            generator=generator,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        image_embeds = self.prior.post_process_latents(latents)
        if num_candidates > 1:
            image_embeds = best_of_candidates(image_embeds, text_embeds, num_candidates)
        return image_embeds


class DecoderStageMixin:
    """Decodes image embeddings with ``text_proj`` + ``decoder`` and upsamples through the super-resolution cascade."""

    @property
    def super_res_stages(self) -> list[tuple[torch.nn.Module, torch.nn.Module | None]]:
        """The cascade's stages present in this pipeline, in order, as ``(model, last_step_model_or_None)``."""
        stages = []
        for first_name, last_name in SUPER_RES_STAGES:
            first = getattr(self, first_name, None)
            if first is None:
                break
            stages.append((first, getattr(self, last_name, None)))
        return stages

    @property
    def decoder_sample_size(self) -> tuple[int, int]:
        size = self.decoder.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def super_res_size(self, first: torch.nn.Module, low_res: tuple[int, int]) -> tuple[int, int]:
        """The resolution of the cascade stage whose main model is ``first``, above a ``low_res`` input."""
        size = first.config.sample_size or 4 * low_res[-1]
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def output_sizes(self) -> list[tuple[int, int]]:
        """The resolution after the decoder and after each cascade stage; the last is the pipeline's output size."""
        sizes = [self.decoder_sample_size]
        for first, _ in self.super_res_stages:
            sizes.append(self.super_res_size(first, sizes[-1]))
        return sizes

    @staticmethod
    def stage_sampler(scheduler, eta: float | None, inpainting=None):
        """
        The scheduler a stage samples with: its own, or, for DDIM with ``eta`` or for inpainting, the
        :class:`UnCLIPScheduler` of the same config (the timesteps and alphas that :meth:`invert` uses).
        """
        if scheduler is None or (eta is None and inpainting is None):
            return scheduler
        return as_unclip_scheduler(scheduler)

    def decoder_predictor(
        self, image_embeds: torch.Tensor, text: TextConditioning, guidance_scale: float
    ) -> tuple[Callable, torch.Tensor]:
        """``(predict(i, t, model_input), context)``: the decoder's (guided) model output for :func:`denoise`."""
        guided = guidance_scale > 1.0 and text.guided
        text = text if guided else text.conditional()
        drop_masks, channels = {}, self.decoder.config.in_channels
        if uses_null_branch(self.decoder):  # DALLE2-pytorch: learned null branch, every output channel guided
            check_null_branch_decoder(self)
            text = conditional_twice(text) if guided else text
            drop_masks = null_branch_masks(image_embeds.shape[0], image_embeds.device) if guided else {}
            channels = None
        context, time_embeds = self.text_proj(
            image_embeddings=image_embeds,
            prompt_embeds=text.embeds,
            text_encoder_hidden_states=text.hidden_states,
            do_classifier_free_guidance=guided,
        )
        mask = F.pad(text.mask, (self.text_proj.clip_extra_context_tokens, 0), value=True)

        def predict(i, t, model_input, self_cond=None):
            model_input = torch.cat([model_input] * 2) if guided else model_input
            output = self.decoder(
                sample=model_input,
                timestep=t,
                encoder_hidden_states=context,
                class_labels=time_embeds,
                attention_mask=mask,
                **drop_masks,
                **({"self_cond": self_cond} if self_cond is not None else {}),
            ).sample
            return guide(output, guidance_scale, channels=channels) if guided else output

        return self_conditioned(self.decoder, predict, guided), context

    def run_decoder(
        self,
        image_embeds: torch.Tensor,
        text: TextConditioning,
        num_inference_steps: int,
        guidance_scale: float,
        generator=None,
        latents: torch.Tensor | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=None,
        eta: float | None = None,
        inpainting=None,
        **step_extra,
    ) -> torch.Tensor:
        """
        Returns the decoder's images in [-1, 1], ``(B, C, H, W)`` at the decoder's resolution. With ``eta``, samples
        with DDIM at that η; with ``inpainting`` (an :class:`InpaintingRegion`), RePaint-style inpainting.
        """
        predict, context = self.decoder_predictor(image_embeds, text, guidance_scale)
        warn_if_respaced(self.decoder, self.decoder_scheduler, num_inference_steps, "decoder")
        scheduler = self.stage_sampler(self.decoder_scheduler, eta, inpainting)
        latents = prepare_latents(
            (image_embeds.shape[0], self.decoder.config.in_channels, *self.decoder_sample_size),
            context.dtype,
            context.device,
            generator,
            latents,
            scheduler,
            "decoder_latents",
        )
        latents = denoise(
            self,
            stage="decoder",
            scheduler=scheduler,
            latents=latents,
            num_inference_steps=num_inference_steps,
            predict=predict,
            generator=generator,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            refinement=inpainting.refinement(latents.shape[-2:], scheduler, generator) if inpainting else None,
            **({"eta": eta} if eta is not None else {}),
            **step_extra,
        )
        image = latents.clamp(-1, 1)
        return inpainting.paste(image) if inpainting else image

    def super_res_predictor(
        self,
        first,
        last,
        upscaled: torch.Tensor,
        is_last_step: Callable[[int], bool],
        text: TextConditioning | None = None,
        guidance_scale: float = 1.0,
    ):
        """
        ``predict(i, t, model_input)`` of a cascade stage: ``last`` (when present) runs the final sampling step.
        Karlo's upsamplers are unguided and ignore ``text``; a DALLE2-pytorch upsampler conditioned on the caption
        reads ``text`` and is guided by ``guidance_scale`` (its ``Decoder.sample`` guides every U-Net).
        """
        if uses_null_branch(first):
            return null_branch_super_res_predictor(first, last, upscaled, text, guidance_scale)

        def predict(i, t, model_input):
            unet = last if (last is not None and is_last_step(i)) else first
            return unet(sample=torch.cat([model_input, upscaled], dim=1), timestep=t).sample

        return predict

    def run_super_res(
        self,
        image: torch.Tensor,
        num_inference_steps: list[int],
        generator=None,
        latents: list[torch.Tensor | None] | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=None,
        eta: float | None = None,
        inpainting=None,
        text: TextConditioning | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """
        Upsamples ``image`` (in [-1, 1]) through every stage of the cascade; no guidance, as in Karlo. ``eta`` and
        ``inpainting`` as in :meth:`run_decoder`, for every stage. ``text`` and ``guidance_scale`` are only read by
        DALLE2-pytorch upsamplers conditioned on the caption (see :meth:`super_res_predictor`).
        """
        scheduler = self.stage_sampler(self.super_res_scheduler, eta, inpainting)
        for index, (first, last) in enumerate(self.super_res_stages):
            size = self.super_res_size(first, image.shape[-2:])
            upscaled = upscale(image, size, mode=first.config.get("lowres_resample", "bicubic"))
            upscaled = noise_lowres_condition(first, upscaled, generator)  # DALLE2-pytorch's lowres_noise_cond only
            # Karlo's upsamplers count the low-res channels in `in_channels`, DALLE2-pytorch's (`lowres_cond`) do not
            channels = first.config.in_channels - (0 if first.config.get("lowres_cond") else image.shape[1])
            warn_if_respaced(first, scheduler, num_inference_steps[index], f"super-resolution stage {index + 1}")
            stage_latents = prepare_latents(
                (image.shape[0], channels, *size),
                image.dtype,
                image.device,
                generator,
                latents[index] if latents else None,
                scheduler,
                f"super_res_latents[{index}]" if index else "super_res_latents",
            )
            is_last_step = lambda i: i == len(scheduler.timesteps) - 1  # noqa: E731
            image = denoise(
                self,
                stage=f"super_res_{index + 1}",
                scheduler=scheduler,
                latents=stage_latents,
                num_inference_steps=num_inference_steps[index],
                predict=self.super_res_predictor(first, last, upscaled, is_last_step, text, guidance_scale),
                generator=generator,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
                refinement=inpainting.refinement(size, scheduler, generator) if inpainting else None,
                **({"eta": eta} if eta is not None else {}),
            )
            if inpainting:
                image = inpainting.paste(image)
        return image

    def check_decoder_inputs(
        self,
        decoder_num_inference_steps,
        super_res_num_inference_steps,
        decoder_guidance_scale,
        output_type,
        callback_on_step_end_tensor_inputs,
        decoder_eta=None,
        super_res_eta=None,
    ) -> list[int]:
        """Check the arguments of the decoder and cascade; returns the per-stage super-resolution step counts."""
        check_eta(decoder_eta, "decoder_eta")
        check_eta(super_res_eta, "super_res_eta")
        check_steps(decoder_num_inference_steps, "decoder_num_inference_steps")
        sr_steps = check_steps(super_res_num_inference_steps, "super_res_num_inference_steps", len(self.super_res_stages))
        check_guidance(decoder_guidance_scale, "decoder_guidance_scale")
        check_output_type(output_type)
        check_callback_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        return sr_steps

    def decode(
        self,
        image_embeds: torch.Tensor,
        text: TextConditioning,
        *,
        decoder_num_inference_steps: int,
        super_res_num_inference_steps: list[int],
        decoder_guidance_scale: float,
        generator=None,
        decoder_latents: torch.Tensor | None = None,
        super_res_latents=None,
        output_type: str = "pil",
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=None,
        decoder_eta: float | None = None,
        super_res_eta: float | None = None,
        inpainting=None,
        **step_extra,
    ):
        """
        Decoder, then the cascade, then post-processing: the shared tail of every unCLIP pipeline. ``decoder_eta`` /
        ``super_res_eta`` switch a stage to DDIM at that η; ``inpainting`` keeps the unmasked region of an image.
        """
        image = self.run_decoder(
            image_embeds,
            text,
            decoder_num_inference_steps,
            decoder_guidance_scale,
            generator=generator,
            latents=decoder_latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            eta=decoder_eta,
            inpainting=inpainting,
            **step_extra,
        )
        if isinstance(super_res_latents, torch.Tensor):
            super_res_latents = [super_res_latents]
        image = self.run_super_res(
            image,
            super_res_num_inference_steps,
            generator=generator,
            latents=super_res_latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            eta=super_res_eta,
            inpainting=inpainting,
            text=text,
            guidance_scale=decoder_guidance_scale,
        )
        self.maybe_free_model_hooks()
        return self.postprocess(image, output_type)

    def postprocess(self, image: torch.Tensor, output_type: str):
        """[-1, 1] images -> ``pil`` / ``np`` (NHWC in [0, 1]) / ``pt`` (NCHW in [0, 1])."""
        return VaeImageProcessor(do_resize=False).postprocess(image.float(), output_type=output_type)


def upscale(image: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize ``image`` to ``size`` for an upsampler: antialiased bicubic (Karlo) or ``"nearest"`` (DALLE2-pytorch)."""
    if mode == "nearest":
        return F.interpolate(image, size=size, mode="nearest")
    if mode != "bicubic":
        raise ValueError(f"unknown resize mode {mode!r} (expected 'bicubic' or 'nearest').")
    if image.device.type == "mps":  # MPS lacks antialiased bicubic
        return F.interpolate(image, size=size)
    kwargs = {"antialias": True} if "antialias" in inspect.signature(F.interpolate).parameters else {}
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False, **kwargs)
