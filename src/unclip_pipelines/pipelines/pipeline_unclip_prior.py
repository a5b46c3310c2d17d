"""Text -> CLIP image embeddings with unCLIP's diffusion prior (paper §2.2)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import PriorTransformer
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from ..models.dalle2 import Dalle2PriorNetwork
from .base import UnCLIPPipelineBase
from .output import UnCLIPPriorPipelineOutput
from .stages import PriorStageMixin, TextEncodingMixin
from .validation import (
    check_callback_inputs,
    check_generator,
    check_guidance,
    check_negative_prompt,
    check_positive_int,
    check_prompt,
    check_steps,
)


class UnCLIPPriorPipeline(UnCLIPPipelineBase, TextEncodingMixin, PriorStageMixin):
    r"""
    Samples CLIP image embeddings for prompts with unCLIP's diffusion prior, like Kandinsky 2.2's prior pipeline.
    The embeddings feed :class:`UnCLIPDecoderPipeline` (or any decoder conditioned on CLIP image embeddings).

    Loads from a full unCLIP folder too (``UnCLIPPriorPipeline.from_pretrained(karlo_dir)`` takes the prior part).

    Args:
        prior ([`PriorTransformer`]): the diffusion prior (predicts x_0 of the normalised image embedding).
        text_encoder ([`CLIPTextModelWithProjection`]): frozen CLIP text encoder.
        tokenizer ([`CLIPTokenizer`]): its tokenizer.
        prior_scheduler: [`UnCLIPScheduler`] or any diffusers scheduler.
    """

    model_cpu_offload_seq = "text_encoder->prior"

    def __init__(
        self,
        prior: PriorTransformer | Dalle2PriorNetwork,
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        prior_scheduler,
    ):
        super().__init__()
        self.register_unclip_modules(
            prior=prior, text_encoder=text_encoder, tokenizer=tokenizer, prior_scheduler=prior_scheduler
        )

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        num_images_per_prompt,
        num_inference_steps,
        guidance_scale,
        text_model_output,
        generator,
        callback_on_step_end_tensor_inputs,
        prior_num_candidates=1,
    ) -> tuple[list[str] | None, list[str] | None, int]:
        """Validate arguments; returns the prompts, negative prompts and the number of prompts."""
        check_positive_int(prior_num_candidates, "prior_num_candidates")
        prompts = check_prompt(prompt, allow_none=text_model_output is not None)
        if prompts is not None and text_model_output is not None:
            raise ValueError("Pass either `prompt` or `text_model_output`, not both.")
        batch = len(prompts) if prompts is not None else text_model_output[0].shape[0]
        check_positive_int(num_images_per_prompt, "num_images_per_prompt")
        check_steps(num_inference_steps, "num_inference_steps")
        check_guidance(guidance_scale, "guidance_scale")
        check_generator(generator, batch * num_images_per_prompt)
        check_callback_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        return prompts, check_negative_prompt(negative_prompt, batch), batch

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 25,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        text_model_output=None,
        text_attention_mask: torch.Tensor | None = None,
        output_type: str = "pt",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' convention)
        prior_num_candidates: int = 1,
    ):
        r"""
        Args:
            prompt: prompt(s) to sample image embeddings for.
            negative_prompt: replaces the empty caption in guidance's unconditional branch; its own embeddings are
                returned as ``negative_image_embeds``.
            num_images_per_prompt: embeddings per prompt.
            num_inference_steps: prior steps (Karlo: 25).
            guidance_scale: classifier-free guidance on the predicted x_0 (on when > 1; Karlo: 4).
            generator: torch generator(s) for reproducibility.
            latents: initial noise ``(B, embedding_dim)`` in the prior's normalised space.
            text_model_output: precomputed ``(text_embeds, last_hidden_state)`` instead of ``prompt``, with
                ``text_attention_mask``.
            output_type: ``"pt"`` or ``"np"``.
            return_dict: return :class:`UnCLIPPriorPipelineOutput` rather than a tuple.
            callback_on_step_end: ``callback(pipe, step, timestep, callback_kwargs) -> dict`` after each step.
            callback_on_step_end_tensor_inputs: tensors passed to the callback (``latents``, ``model_output``).
            prior_num_candidates: best-of-N (paper §2.2, N = 2): sample N embeddings per output and keep the one
                with the highest dot product with the normalised CLIP text embedding; ``latents`` then has
                ``prompts x num_images_per_prompt x N`` rows.
        """
        if output_type not in ("pt", "np"):
            raise ValueError(f"`output_type` must be 'pt' or 'np' for image embeddings, got {output_type!r}.")
        prompts, negative, _ = self.check_inputs(
            prompt,
            negative_prompt,
            num_images_per_prompt,
            num_inference_steps,
            guidance_scale,
            text_model_output,
            generator,
            callback_on_step_end_tensor_inputs,
            prior_num_candidates,
        )
        device = self._execution_device
        guided = guidance_scale > 1.0
        sample = dict(
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            num_candidates=prior_num_candidates,
        )
        text = self.encode_prompt(
            prompts, device, num_images_per_prompt, guided, negative, text_model_output, text_attention_mask
        )
        image_embeds = self.run_prior(text, latents=latents, **sample)

        negative_image_embeds = None
        if negative is not None:
            negative_text = self.encode_prompt(negative, device, num_images_per_prompt, guided)
            negative_image_embeds = self.run_prior(negative_text, **sample)
        self.maybe_free_model_hooks()

        if output_type == "np":
            image_embeds = image_embeds.float().cpu().numpy()
            if negative_image_embeds is not None:
                negative_image_embeds = negative_image_embeds.float().cpu().numpy()
        if not return_dict:
            return (image_embeds, negative_image_embeds)
        return UnCLIPPriorPipelineOutput(image_embeds=image_embeds, negative_image_embeds=negative_image_embeds)
