"""Text -> image with unCLIP: CLIP text encoder -> diffusion prior -> decoder -> super-resolution cascade."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel
from transformers import CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from ..manipulations import slerp
from ..models.dalle2 import Dalle2PriorNetwork, Dalle2UNet
from ..models.identity_text_proj import UnCLIPIdentityTextProjModel
from ..models.text_proj import UnCLIPTextProjModel
from .base import UnCLIPPipelineBase
from .image_encoding import ImageEncodingMixin
from .inversion import InversionMixin, check_noise_mode, frame_positions
from .output import UnCLIPPipelineOutput
from .pipeline_unclip_decoder import DECODER_OFFLOAD_SEQ
from .stages import SUPER_RES_COMPONENTS, DecoderStageMixin, PriorStageMixin, TextEncodingMixin
from .validation import (
    check_generator,
    check_guidance,
    check_negative_prompt,
    check_num_frames,
    check_output_type,
    check_positive_int,
    check_prompt,
    check_steps,
)


#: what the decoder can be given as image embedding (paper §5.1, "importance of the prior")
CONDITIONING_MODES = ("prior", "text_embedding", "caption_only")


class UnCLIPPipeline(
    UnCLIPPipelineBase, TextEncodingMixin, PriorStageMixin, DecoderStageMixin, ImageEncodingMixin, InversionMixin
):
    r"""
    Text-to-image generation with unCLIP (DALL·E 2, arXiv 2204.06125), compatible with Kakao Brain's Karlo folders
    (``kakaobrain/karlo-v1-alpha`` loads unchanged) and with diffusers' deprecated ``UnCLIPPipeline``.

    It runs :class:`UnCLIPPriorPipeline`'s stage and then :class:`UnCLIPDecoderPipeline`'s; both can also be used on
    their own, from the same folder.

    Args:
        prior ([`PriorTransformer`]): diffusion prior, text -> CLIP image embedding.
        decoder ([`UNet2DConditionModel`]): decoder, image embedding (+ caption) -> low-resolution image.
        text_encoder ([`CLIPTextModelWithProjection`]), tokenizer ([`CLIPTokenizer`]): frozen CLIP text side.
        text_proj ([`UnCLIPTextProjModel`]): the decoder's conditioning projection.
        super_res_first, super_res_last ([`UNet2DModel`] or ``None``): Karlo's upsampler (pass ``None`` for a
            decoder-only model); ``super_res_2_*`` and ``super_res_3_*`` add further x4 stages.
        prior_scheduler, decoder_scheduler, super_res_scheduler: [`UnCLIPScheduler`] or any diffusers scheduler.
        image_encoder ([`CLIPVisionModelWithProjection`], optional), feature_extractor ([`CLIPImageProcessor`],
            optional): the CLIP image tower, needed only for ``rerank=True``.
    """

    model_cpu_offload_seq = "text_encoder->prior->" + DECODER_OFFLOAD_SEQ + "->image_encoder"
    _exclude_from_cpu_offload = ["prior"]
    _optional_components = list(SUPER_RES_COMPONENTS) + ["image_encoder", "feature_extractor"]
    # the InpaintingRegion every stage keeps during one call of UnCLIPInpaintPipeline (None: plain text-to-image)
    _inpainting = None

    def __init__(
        self,
        prior: PriorTransformer | Dalle2PriorNetwork,
        decoder: UNet2DConditionModel | Dalle2UNet,
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        text_proj: UnCLIPTextProjModel | UnCLIPIdentityTextProjModel,
        super_res_first: UNet2DModel | Dalle2UNet | None,
        super_res_last: UNet2DModel | None,
        prior_scheduler,
        decoder_scheduler,
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
            prior=prior,
            decoder=decoder,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_proj=text_proj,
            super_res_first=super_res_first,
            super_res_last=super_res_last,
            prior_scheduler=prior_scheduler,
            decoder_scheduler=decoder_scheduler,
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

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        num_images_per_prompt,
        prior_num_inference_steps,
        prior_guidance_scale,
        text_model_output,
        generator,
        conditioning="prior",
        prior_num_candidates=1,
        rerank=False,
    ) -> tuple[list[str] | None, list[str] | None, int]:
        """Validate the prompt-side arguments; returns prompts, negative prompts and the number of prompts."""
        check_positive_int(prior_num_candidates, "prior_num_candidates")
        if prior_num_candidates > 1 and conditioning != "prior":
            raise ValueError(
                f"`prior_num_candidates` picks among the prior's samples, but `conditioning={conditioning!r}` does "
                "not run the prior: use conditioning='prior' or prior_num_candidates=1."
            )
        if not isinstance(rerank, bool):
            raise TypeError(f"`rerank` must be True or False, got {type(rerank).__name__}.")
        if rerank:
            self.require_image_encoder("`rerank=True`")
        if conditioning not in CONDITIONING_MODES:
            raise ValueError(f"`conditioning` must be one of {CONDITIONING_MODES}, got {conditioning!r}.")
        prompts = check_prompt(prompt, allow_none=text_model_output is not None)
        if prompts is not None and text_model_output is not None:
            raise ValueError("Pass either `prompt` or `text_model_output`, not both.")
        batch = len(prompts) if prompts is not None else text_model_output[0].shape[0]
        check_positive_int(num_images_per_prompt, "num_images_per_prompt")
        check_steps(prior_num_inference_steps, "prior_num_inference_steps")
        check_guidance(prior_guidance_scale, "prior_guidance_scale")
        check_generator(generator, batch * num_images_per_prompt)
        return prompts, check_negative_prompt(negative_prompt, batch), batch

    def image_embeddings_for(
        self, conditioning: str, text, num_inference_steps, guidance_scale, num_candidates=1, **prior_kwargs
    ):
        """The decoder's image embeddings under one of the ``conditioning`` modes of :meth:`__call__`."""
        if conditioning == "prior":
            return self.run_prior(
                text, num_inference_steps, guidance_scale, num_candidates=num_candidates, **prior_kwargs
            )
        conditional = text.conditional()
        if conditioning == "text_embedding":
            return conditional.embeds
        return self.text_proj.null_image_embeddings(conditional.embeds.shape[0]).to(conditional.embeds.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        prior_num_inference_steps: int = 25,
        decoder_num_inference_steps: int = 25,
        super_res_num_inference_steps: int | list[int] = 7,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prior_latents: torch.Tensor | None = None,
        decoder_latents: torch.Tensor | None = None,
        super_res_latents: torch.Tensor | list[torch.Tensor] | None = None,
        text_model_output=None,
        text_attention_mask: torch.Tensor | None = None,
        prior_guidance_scale: float = 4.0,
        decoder_guidance_scale: float = 8.0,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' convention)
        conditioning: str = "prior",
        prior_num_candidates: int = 1,
        rerank: bool = False,
        decoder_eta: float | None = None,
        super_res_eta: float | None = None,
    ):
        r"""
        Args:
            prompt: the prompt(s).
            negative_prompt: replaces the empty caption in the unconditional branch of both stages' guidance.
            num_images_per_prompt: images per prompt.
            prior_num_inference_steps, decoder_num_inference_steps, super_res_num_inference_steps: steps per stage
                (Karlo's "fast" setting: 25, 25, 7); the last may list one count per cascade stage.
            generator: torch generator(s) for reproducibility.
            prior_latents, decoder_latents, super_res_latents: initial noise per stage (the last may be a list, one
                tensor per cascade stage).
            text_model_output: precomputed ``(text_embeds, last_hidden_state)`` instead of ``prompt``, with its
                ``text_attention_mask``.
            prior_guidance_scale, decoder_guidance_scale: classifier-free guidance per stage (on when > 1).
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict: return :class:`UnCLIPPipelineOutput` rather than a tuple.
            callback_on_step_end: ``callback(pipe, step, timestep, callback_kwargs) -> dict``, called after every step
                of every stage; ``pipe.stage`` tells which.
            callback_on_step_end_tensor_inputs: tensors passed to the callback (``latents``, ``model_output``).
            conditioning: what the decoder gets as image embedding — ``"prior"`` (the prior's sample, default),
                ``"text_embedding"`` (the CLIP text embedding, as if it were an image embedding) or
                ``"caption_only"`` (no image embedding: the decoder's learned null embedding, its input when the
                embedding was dropped in training). The paper's "importance of the prior" comparison (§5.1).
            prior_num_candidates: best-of-N sampling of the prior (paper §2.2, N = 2): sample N image embeddings per
                image and keep the one with the highest dot product with the (normalised) CLIP text embedding.
                ``prior_latents`` then has ``prompts x num_images_per_prompt x N`` rows.
            rerank: generate ``num_images_per_prompt`` images per prompt and return each prompt's images ordered by
                CLIP image–text similarity, best first, with the ``scores`` (needs ``image_encoder`` and
                ``feature_extractor``).
            decoder_eta, super_res_eta: ``None`` (default) samples the stage with its scheduler; a number in [0, 1]
                samples it with DDIM at that η.

        Returns:
            :class:`UnCLIPPipelineOutput` with ``images``, the decoder's ``image_embeds`` and, with ``rerank``,
            ``scores``.
        """
        prompts, negative, _ = self.check_inputs(
            prompt,
            negative_prompt,
            num_images_per_prompt,
            prior_num_inference_steps,
            prior_guidance_scale,
            text_model_output,
            generator,
            conditioning,
            prior_num_candidates,
            rerank,
        )
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
        callbacks = dict(
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

        guided = prior_guidance_scale > 1.0 or decoder_guidance_scale > 1.0
        text = self.encode_prompt(
            prompts, device, num_images_per_prompt, guided, negative, text_model_output, text_attention_mask
        )
        image_embeds = self.image_embeddings_for(
            conditioning,
            text,
            prior_num_inference_steps,
            prior_guidance_scale,
            generator=generator,
            latents=prior_latents,
            num_candidates=prior_num_candidates,
            **callbacks,
        )
        images = self.decode(
            image_embeds,
            text,
            decoder_num_inference_steps=decoder_num_inference_steps,
            super_res_num_inference_steps=sr_steps,
            decoder_guidance_scale=decoder_guidance_scale,
            generator=generator,
            decoder_latents=decoder_latents,
            super_res_latents=super_res_latents,
            output_type="pt" if rerank else output_type,
            decoder_eta=decoder_eta,
            super_res_eta=super_res_eta,
            inpainting=self._inpainting,
            **callbacks,
        )
        scores = None
        if rerank:
            text_embeds = text.conditional().embeds
            images, image_embeds, scores = self.rerank(images, image_embeds, text_embeds, num_images_per_prompt)
            images = self.postprocess(images * 2 - 1, output_type)
        if not return_dict:
            return (images,)
        return UnCLIPPipelineOutput(images=images, image_embeds=image_embeds, scores=scores)

    @torch.no_grad()
    def interpolate(
        self,
        prompt_a: str,
        prompt_b: str,
        num_frames: int = 5,
        noise: str = "fixed",
        prior_num_inference_steps: int = 25,
        decoder_num_inference_steps: int = 25,
        super_res_num_inference_steps: int | list[int] = 7,
        prior_guidance_scale: float = 4.0,
        decoder_guidance_scale: float = 8.0,
        prior_num_candidates: int = 1,
        generator: torch.Generator | None = None,
        prior_latents: torch.Tensor | None = None,
        decoder_latents: torch.Tensor | None = None,
        super_res_latents: torch.Tensor | list[torch.Tensor] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        r"""
        Interpolate between the images of two prompts (paper §3.2 from text): the prior samples one CLIP image
        embedding per prompt, and frame ``i`` decodes ``slerp(z_a, z_b, θ_i)`` (θ evenly spaced in [0, 1]) with DDIM
        (η = 0) and the empty caption, as the variation pipeline's :meth:`interpolate` does.

        Args:
            prompt_a, prompt_b: the two prompts.
            num_frames: frames, both ends included (≥ 2).
            noise: ``"fixed"`` — one decoder x_T for all frames (``decoder_latents`` ``(1, C, h, w)`` or drawn from
                ``generator``); ``"slerp"`` — a random x_T per end, slerped (``decoder_latents`` may give both,
                ``(2, C, h, w)``).
            prior_latents: ``(2 x prior_num_candidates, D)`` initial noise of the prior.
            super_res_latents: the cascade's x_T, shared by every frame (``(1, C, H, W)`` per stage).
            Other arguments as :meth:`__call__`.

        Returns:
            :class:`UnCLIPPipelineOutput` with the frames and their ``image_embeds``.
        """
        check_num_frames(num_frames)
        check_noise_mode(noise)
        prompts = check_prompt([prompt_a, prompt_b])
        check_steps(prior_num_inference_steps, "prior_num_inference_steps")
        check_guidance(prior_guidance_scale, "prior_guidance_scale")
        check_positive_int(prior_num_candidates, "prior_num_candidates")
        check_output_type(output_type)
        sr_steps = self.check_decoder_inputs(
            decoder_num_inference_steps, super_res_num_inference_steps, decoder_guidance_scale, output_type, []
        )
        device = self._execution_device
        text = self.encode_prompt(prompts, device, 1, prior_guidance_scale > 1.0)
        embeds = self.run_prior(
            text,
            prior_num_inference_steps,
            prior_guidance_scale,
            generator=generator,
            latents=prior_latents,
            num_candidates=prior_num_candidates,
        )
        if noise == "slerp" and (decoder_latents is None or decoder_latents.shape[0] == 2):
            ends = [None, None] if decoder_latents is None else [decoder_latents[:1], decoder_latents[1:]]
            ends = [self.fixed_latents(generator, end, super_res_latents, device, embeds.dtype) for end in ends]
            decoder_ends = (ends[0][0], ends[1][0])
            super_res = ends[0][1]
        else:
            fixed, super_res = self.fixed_latents(generator, decoder_latents, super_res_latents, device, embeds.dtype)
            decoder_ends = (fixed, fixed)
        positions = frame_positions(num_frames)
        image_embeds = slerp(embeds[:1], embeds[1:], positions)[:, 0]
        latents = self.frame_latents([decoder_ends, *[(x, x) for x in super_res]], positions)
        images = self.decode_frames(
            image_embeds,
            latents[0],
            latents[1:],
            decoder_num_inference_steps=decoder_num_inference_steps,
            super_res_num_inference_steps=sr_steps,
            decoder_guidance_scale=decoder_guidance_scale,
            output_type=output_type,
        )
        if not return_dict:
            return (images,)
        return UnCLIPPipelineOutput(images=images, image_embeds=image_embeds)
