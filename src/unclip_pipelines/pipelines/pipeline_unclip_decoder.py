"""CLIP image embeddings (+ an optional caption) -> images, through the decoder and the super-resolution cascade."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from transformers import CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from ..models.dalle2 import Dalle2UNet
from ..models.identity_text_proj import UnCLIPIdentityTextProjModel
from ..models.text_proj import UnCLIPTextProjModel
from .base import UnCLIPPipelineBase
from .output import UnCLIPPipelineOutput
from .stages import SUPER_RES_COMPONENTS, DecoderStageMixin, TextEncodingMixin
from .validation import (
    check_embeddings,
    check_generator,
    check_negative_prompt,
    check_positive_int,
    check_prompt,
)

DECODER_OFFLOAD_SEQ = (
    "text_proj->decoder->super_res_first->super_res_last->super_res_2_first->super_res_2_last"
    "->super_res_3_first->super_res_3_last"
)


class UnCLIPDecoderPipeline(UnCLIPPipelineBase, TextEncodingMixin, DecoderStageMixin):
    r"""
    Decodes CLIP image embeddings into images (paper §2.1): a GLIDE-style diffusion decoder conditioned on the image
    embedding (added to the timestep embedding and as extra context tokens) and optionally on a caption, then a
    cascade of diffusion upsamplers (none, Karlo's one stage, or up to three x4 stages).

    Args:
        decoder ([`UNet2DConditionModel`]): the decoder; ``class_embed_type="identity"``, 2x output channels when it
            learns its variance.
        text_encoder ([`CLIPTextModelWithProjection`]), tokenizer ([`CLIPTokenizer`]): encode the caption.
        text_proj ([`UnCLIPTextProjModel`]): the decoder's conditioning projection.
        decoder_scheduler: [`UnCLIPScheduler`] or any diffusers scheduler.
        super_res_first, super_res_last ([`UNet2DModel`], optional): first cascade stage (``super_res_last`` runs
            only its last step, as in Karlo); ``super_res_2_*``, ``super_res_3_*`` for further x4 stages.
        super_res_scheduler (optional): scheduler of the cascade.
        image_encoder ([`CLIPVisionModelWithProjection`], optional), feature_extractor ([`CLIPImageProcessor`],
            optional): the CLIP image tower (unused here; accepted so that ``UnCLIPDecoderPipeline(**components)``
            works from any unCLIP pipeline's ``components``).
    """

    model_cpu_offload_seq = "text_encoder->" + DECODER_OFFLOAD_SEQ + "->image_encoder"
    _optional_components = list(SUPER_RES_COMPONENTS) + ["image_encoder", "feature_extractor"]

    def __init__(
        self,
        decoder: UNet2DConditionModel | Dalle2UNet,
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        text_proj: UnCLIPTextProjModel | UnCLIPIdentityTextProjModel,
        decoder_scheduler,
        super_res_first: UNet2DModel | Dalle2UNet | None = None,
        super_res_last: UNet2DModel | None = None,
        super_res_scheduler=None,
        super_res_2_first: UNet2DModel | Dalle2UNet | None = None,
        super_res_2_last: UNet2DModel | None = None,
        super_res_3_first: UNet2DModel | Dalle2UNet | None = None,
        super_res_3_last: UNet2DModel | None = None,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        feature_extractor: CLIPImageProcessor | None = None,
    ):
        super().__init__()
        self.register_unclip_modules(
            decoder=decoder,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_proj=text_proj,
            decoder_scheduler=decoder_scheduler,
            super_res_first=super_res_first,
            super_res_last=super_res_last,
            super_res_scheduler=super_res_scheduler,
            super_res_2_first=super_res_2_first,
            super_res_2_last=super_res_2_last,
            super_res_3_first=super_res_3_first,
            super_res_3_last=super_res_3_last,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
        )
        if self.super_res_stages and super_res_scheduler is None:
            raise ValueError("A super-resolution stage needs `super_res_scheduler`.")

    def check_inputs(self, image_embeds, prompt, negative_prompt, num_images_per_prompt, generator):
        """Validate the embeddings and the optional caption; returns the prompts and negative prompts."""
        check_embeddings(image_embeds, "image_embeds", self.text_proj.config.clip_embeddings_dim)
        batch = image_embeds.shape[0]
        prompts = check_prompt(prompt, allow_none=True, allow_empty_text=True)
        if prompts is None:
            prompts = [""] * batch
        elif len(prompts) == 1 and batch > 1:
            prompts = prompts * batch
        if len(prompts) != batch:
            raise ValueError(f"Got {len(prompts)} prompts for {batch} image embeddings: pass one per embedding.")
        check_positive_int(num_images_per_prompt, "num_images_per_prompt")
        check_generator(generator, batch * num_images_per_prompt)
        return prompts, check_negative_prompt(negative_prompt, batch)

    @torch.no_grad()
    def __call__(
        self,
        image_embeds: torch.Tensor,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        decoder_num_inference_steps: int = 25,
        super_res_num_inference_steps: int | list[int] = 7,
        decoder_guidance_scale: float = 8.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        decoder_latents: torch.Tensor | None = None,
        super_res_latents: torch.Tensor | list[torch.Tensor] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' convention)
        decoder_eta: float | None = None,
        super_res_eta: float | None = None,
    ):
        r"""
        Args:
            image_embeds: ``(B, D)`` CLIP image embeddings (e.g. from :class:`UnCLIPPriorPipeline`).
            prompt: optional caption(s), one per embedding; default: the empty caption, as for variations.
            negative_prompt: replaces the empty caption in guidance's unconditional branch.
            num_images_per_prompt: images per embedding.
            decoder_num_inference_steps, super_res_num_inference_steps: steps (an int, or one per cascade stage).
            decoder_guidance_scale: classifier-free guidance of the decoder (on when > 1; Karlo: 8).
            generator: torch generator(s).
            decoder_latents: ``(B * num_images_per_prompt, C, H, W)`` initial decoder noise.
            super_res_latents: initial noise of the first cascade stage, or a list with one tensor per stage.
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict: return :class:`UnCLIPPipelineOutput` rather than a tuple.
            callback_on_step_end, callback_on_step_end_tensor_inputs: as in diffusers; ``pipe.stage`` tells the stage.
            decoder_eta, super_res_eta: ``None`` (default) samples the stage with its scheduler; a number in [0, 1]
                samples it with DDIM at that η on the stage's noise schedule and Karlo's timesteps (η = 0:
                deterministic, the inverse of :meth:`UnCLIPImageVariationPipeline.invert`).
        """
        prompts, negative = self.check_inputs(image_embeds, prompt, negative_prompt, num_images_per_prompt, generator)
        sr_steps = self.check_decoder_inputs(
            decoder_num_inference_steps,
            super_res_num_inference_steps,
            decoder_guidance_scale,
            output_type,
            callback_on_step_end_tensor_inputs,
            decoder_eta,
            super_res_eta,
        )
        device = self._execution_device
        text = self.encode_prompt(prompts, device, num_images_per_prompt, decoder_guidance_scale > 1.0, negative)
        image_embeds = image_embeds.to(device=device, dtype=text.embeds.dtype)
        image_embeds = image_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        images = self.decode(
            image_embeds,
            text,
            decoder_num_inference_steps=decoder_num_inference_steps,
            super_res_num_inference_steps=sr_steps,
            decoder_guidance_scale=decoder_guidance_scale,
            generator=generator,
            decoder_latents=decoder_latents,
            super_res_latents=super_res_latents,
            output_type=output_type,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            decoder_eta=decoder_eta,
            super_res_eta=super_res_eta,
        )
        if not return_dict:
            return (images,)
        return UnCLIPPipelineOutput(images=images, image_embeds=image_embeds)
