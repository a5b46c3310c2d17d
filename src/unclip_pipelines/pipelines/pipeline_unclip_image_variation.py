"""
Image variations with unCLIP (paper §3.1): encode with CLIP, decode the image embedding again; and the paper's
manipulations of the bipartite latent (CLIP embedding, DDIM-inverted x_T): inversion, interpolation (§3.2) and text
diffs (§3.3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from transformers import CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from ..manipulations import slerp, text_diff_direction
from ..models.dalle2 import Dalle2UNet
from ..models.identity_text_proj import UnCLIPIdentityTextProjModel
from ..models.text_proj import UnCLIPTextProjModel
from .image_encoding import ImageEncodingMixin, ImageInput, image_to_tensor, tensor_to_uint8_arrays
from .inversion import (
    DEFAULT_FIXED_POINT_ITERATIONS,
    INVERSION_DECODER_STEPS,
    INVERSION_GUIDANCE_SCALE,
    INVERSION_SUPER_RES_STEPS,
    InversionMixin,
    check_fixed_point_iterations,
    check_noise_mode,
    frame_positions,
)
from .output import UnCLIPInversion, UnCLIPPipelineOutput
from .pipeline_unclip_decoder import DECODER_OFFLOAD_SEQ, UnCLIPDecoderPipeline
from .stages import SUPER_RES_COMPONENTS
from .validation import check_guidance, check_num_frames, check_output_type, check_prompt, check_steps

__all__ = ["ImageInput", "UnCLIPImageVariationPipeline"]


class UnCLIPImageVariationPipeline(ImageEncodingMixin, InversionMixin, UnCLIPDecoderPipeline):
    r"""
    Generates variations of images: each image is encoded by the CLIP image encoder and its embedding is decoded with
    fresh decoder noise, so the result keeps what CLIP sees and varies the rest. Loads
    ``kakaobrain/karlo-v1-alpha-image-variations`` folders unchanged.

    The manipulations of paper §3 work on the *bipartite latent* of an image, its CLIP embedding plus the decoder's
    DDIM-inverted noise: :meth:`invert`, then ``__call__(..., decoder_eta=η)`` (η = 0 reconstructs, larger η varies),
    :meth:`interpolate` between two images and :meth:`text_diff` towards a caption. See ``docs/manipulations.md``.

    Args:
        decoder, text_encoder, tokenizer, text_proj, decoder_scheduler, super_res_*: as :class:`UnCLIPDecoderPipeline`.
        feature_extractor ([`CLIPImageProcessor`]): prepares images for the image encoder.
        image_encoder ([`CLIPVisionModelWithProjection`]): frozen CLIP image encoder.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->" + DECODER_OFFLOAD_SEQ
    _optional_components = list(SUPER_RES_COMPONENTS)

    def __init__(
        self,
        decoder: UNet2DConditionModel | Dalle2UNet,
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        text_proj: UnCLIPTextProjModel | UnCLIPIdentityTextProjModel,
        feature_extractor: CLIPImageProcessor,
        image_encoder: CLIPVisionModelWithProjection,
        super_res_first: UNet2DModel | Dalle2UNet | None,
        super_res_last: UNet2DModel | None,
        decoder_scheduler,
        super_res_scheduler=None,
        super_res_2_first: UNet2DModel | Dalle2UNet | None = None,
        super_res_2_last: UNet2DModel | None = None,
        super_res_3_first: UNet2DModel | Dalle2UNet | None = None,
        super_res_3_last: UNet2DModel | None = None,
    ):
        super().__init__(
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

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput | None = None,
        num_images_per_prompt: int = 1,
        decoder_num_inference_steps: int = 25,
        super_res_num_inference_steps: int | list[int] = 7,
        generator: torch.Generator | list[torch.Generator] | None = None,
        decoder_latents: torch.Tensor | None = None,
        super_res_latents: torch.Tensor | list[torch.Tensor] | None = None,
        image_embeddings: torch.Tensor | None = None,
        decoder_guidance_scale: float = 8.0,
        output_type: str = "pil",
        return_dict: bool = True,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' convention)
        decoder_eta: float | None = None,
        super_res_eta: float | None = None,
    ):
        r"""
        Args:
            image: the image(s) to vary (see :meth:`encode_image`), or
            image_embeddings: their CLIP image embeddings ``(B, D)`` instead.
            num_images_per_prompt: variations per image.
            prompt: optional caption(s) for the decoder's text conditioning (default: empty, as Karlo).
            decoder_eta, super_res_eta: DDIM's η per stage (``None``: the stage's own sampler). With the latents of
                :meth:`invert` and η = 0 the output reconstructs the inverted image; larger η varies it more
                (``pipe(**inversion.call_kwargs(eta))``).
            Other arguments as :class:`UnCLIPDecoderPipeline`.
        """
        if (image is None) == (image_embeddings is None):
            raise ValueError("Pass exactly one of `image` and `image_embeddings`.")
        if image_embeddings is None:
            image_embeddings = self.encode_image(image)
        return super().__call__(
            image_embeds=image_embeddings,
            prompt=prompt,
            negative_prompt=negative_prompt,
            num_images_per_prompt=num_images_per_prompt,
            decoder_num_inference_steps=decoder_num_inference_steps,
            super_res_num_inference_steps=super_res_num_inference_steps,
            decoder_guidance_scale=decoder_guidance_scale,
            generator=generator,
            decoder_latents=decoder_latents,
            super_res_latents=super_res_latents,
            output_type=output_type,
            return_dict=return_dict,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            decoder_eta=decoder_eta,
            super_res_eta=super_res_eta,
        )

    def manipulation_settings(
        self,
        decoder_num_inference_steps,
        super_res_num_inference_steps,
        decoder_guidance_scale,
        fixed_point_iterations=0,
        output_type="pt",
    ) -> dict:
        """
        Validate the shared arguments of :meth:`invert`, :meth:`interpolate` and :meth:`text_diff`; returns the
        decoding settings (with one step count per cascade stage).
        """
        check_steps(decoder_num_inference_steps, "decoder_num_inference_steps")
        check_guidance(decoder_guidance_scale, "decoder_guidance_scale")
        check_fixed_point_iterations(fixed_point_iterations)
        check_output_type(output_type)
        stages = len(self.super_res_stages)
        super_res_steps = check_steps(super_res_num_inference_steps, "super_res_num_inference_steps", stages)
        return dict(
            decoder_num_inference_steps=decoder_num_inference_steps,
            super_res_num_inference_steps=super_res_steps,
            decoder_guidance_scale=decoder_guidance_scale,
        )

    @torch.no_grad()
    def invert(
        self,
        image: ImageInput,
        decoder_num_inference_steps: int = INVERSION_DECODER_STEPS,
        super_res_num_inference_steps: int | list[int] = INVERSION_SUPER_RES_STEPS,
        decoder_guidance_scale: float = INVERSION_GUIDANCE_SCALE,
        image_embeddings: torch.Tensor | None = None,
        invert_super_res: bool = True,
        fixed_point_iterations: int = DEFAULT_FIXED_POINT_ITERATIONS,
    ) -> UnCLIPInversion:
        r"""
        The bipartite latent of ``image`` (paper §3.1): its CLIP image embedding and the decoder's x_T found by DDIM
        inversion conditioned on it (with the empty caption, as variations are decoded).

        Args:
            image: PIL image(s), ``np.ndarray`` (HWC / NHWC, uint8 or [0, 1]) or a ``torch.Tensor``
                ``(B, 3, H, W)`` in [0, 1] — raw pixels, of any size (each stage inverts them resized to its own).
            decoder_num_inference_steps, super_res_num_inference_steps, decoder_guidance_scale: must match those of
                the decoding (kept in the result; ``pipe(**inversion.call_kwargs())`` reuses them). The defaults (no
                guidance, 50 decoder steps, 25 per upsampler) are the ones DDIM inversion reconstructs with: guidance
                makes the inverted path inexact, 25 decoder steps let some inversions diverge, and a few large
                upsampler steps leave ringing around edges.
            image_embeddings: the images' CLIP embeddings, if already computed.
            invert_super_res: also invert every cascade stage (conditioned on the image at the stage below), so the
                reconstruction is exact at the output resolution too; otherwise the cascade samples fresh noise.
            fixed_point_iterations: extra model evaluations per inversion step that make the step an exact inverse
                of the sampler's (:class:`~unclip_pipelines.pipelines.inversion.FixedPointInversion`); 0 is plain
                DDIM inversion. They matter most for ε-prediction decoders (Karlo's), whose x₀ estimate at the first
                step amplifies any error in ε.

        Returns:
            :class:`UnCLIPInversion`.
        """
        settings = self.manipulation_settings(
            decoder_num_inference_steps, super_res_num_inference_steps, decoder_guidance_scale, fixed_point_iterations
        )
        device = self._execution_device
        pixels = image_to_tensor(image)
        if image_embeddings is None:
            image_embeddings = self.encode_image(tensor_to_uint8_arrays(pixels))
        elif image_embeddings.shape[0] != pixels.shape[0]:
            raise ValueError(f"Got {image_embeddings.shape[0]} `image_embeddings` for {pixels.shape[0]} images.")
        text = self.encode_prompt([""] * pixels.shape[0], device, 1, decoder_guidance_scale > 1.0)
        return self.invert_pixels(
            (pixels * 2 - 1).to(device=device, dtype=text.embeds.dtype),
            image_embeddings.to(device=device, dtype=text.embeds.dtype),
            text,
            invert_super_res=invert_super_res,
            fixed_point_iterations=fixed_point_iterations,
            **settings,
        )

    def _bipartite_latent(self, image, settings: dict, fixed_point_iterations: int) -> UnCLIPInversion:
        """``image`` itself if it is already an :class:`UnCLIPInversion` of one image, else its inversion."""
        if isinstance(image, UnCLIPInversion):
            inversion = image
        else:
            inversion = self.invert(image, fixed_point_iterations=fixed_point_iterations, **settings)
        if inversion.image_embeds.shape[0] != 1:
            raise ValueError(
                f"Pass one image (or the UnCLIPInversion of one image) here, got {inversion.image_embeds.shape[0]}."
            )
        return inversion

    def _embedding_of(self, image) -> torch.Tensor:
        return image.image_embeds if isinstance(image, UnCLIPInversion) else self.encode_pixels(image)

    @staticmethod
    def _settings_of(inversion: UnCLIPInversion) -> dict:
        return dict(
            decoder_num_inference_steps=inversion.decoder_num_inference_steps,
            super_res_num_inference_steps=inversion.super_res_num_inference_steps,
            decoder_guidance_scale=inversion.decoder_guidance_scale,
        )

    @torch.no_grad()
    def interpolate(
        self,
        image_a: ImageInput | UnCLIPInversion,
        image_b: ImageInput | UnCLIPInversion,
        num_frames: int = 5,
        noise: str = "fixed",
        decoder_num_inference_steps: int = INVERSION_DECODER_STEPS,
        super_res_num_inference_steps: int | list[int] = INVERSION_SUPER_RES_STEPS,
        decoder_guidance_scale: float = INVERSION_GUIDANCE_SCALE,
        generator: torch.Generator | None = None,
        decoder_latents: torch.Tensor | None = None,
        super_res_latents: torch.Tensor | list[torch.Tensor] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        fixed_point_iterations: int = DEFAULT_FIXED_POINT_ITERATIONS,
    ):
        r"""
        Interpolate between two images (paper §3.2, Fig. 4): frame ``i`` decodes ``slerp(z_a, z_b, θ_i)`` of their
        CLIP image embeddings, ``θ`` evenly spaced from 0 to 1, with DDIM (η = 0).

        Args:
            image_a, image_b: one image each (as :meth:`invert` takes), or an :class:`UnCLIPInversion` of one image
                (its settings are then used for decoding).
            num_frames: frames, both ends included (≥ 2).
            noise: ``"fixed"`` — one decoder x_T for every frame (``decoder_latents`` ``(1, C, h, w)``, or drawn from
                ``generator``); ``"slerp"`` — x_T slerped between the DDIM inversions of the two images, so the end
                frames are their reconstructions.
            super_res_latents: with ``"fixed"`` noise (or a cascade not inverted), the cascade's x_T shared by all
                frames (``(1, C, H, W)`` per stage); drawn from ``generator`` by default.
            Other arguments as :meth:`invert` and ``__call__``.

        Returns:
            :class:`UnCLIPPipelineOutput` with the frames and their ``image_embeds``.
        """
        check_num_frames(num_frames)
        check_noise_mode(noise)
        settings = self.manipulation_settings(
            decoder_num_inference_steps,
            super_res_num_inference_steps,
            decoder_guidance_scale,
            fixed_point_iterations,
            output_type,
        )
        device, dtype = self._execution_device, self.text_encoder.dtype
        shared_decoder, shared_super_res = self.fixed_latents(
            generator, decoder_latents, super_res_latents, device, dtype
        )
        if noise == "fixed":
            embeds = [self._embedding_of(image) for image in (image_a, image_b)]
            stage_ends = [(x, x) for x in (shared_decoder, *shared_super_res)]
        else:
            a, b = (self._bipartite_latent(image, settings, fixed_point_iterations) for image in (image_a, image_b))
            settings = self._settings_of(a)
            embeds = [a.image_embeds, b.image_embeds]
            if a.super_res_latents is not None and b.super_res_latents is not None:
                super_res_ends = list(zip(a.super_res_latents, b.super_res_latents))
            else:
                super_res_ends = [(x, x) for x in shared_super_res]
            stage_ends = [(a.decoder_latents, b.decoder_latents), *super_res_ends]
        if embeds[0].shape[0] != 1 or embeds[1].shape[0] != 1:
            raise ValueError("`image_a` and `image_b` must be one image each.")

        positions = frame_positions(num_frames)
        image_embeds = slerp(embeds[0], embeds[1], positions)[:, 0]
        latents = self.frame_latents(stage_ends, positions)
        images = self.decode_frames(image_embeds, latents[0], latents[1:], output_type=output_type, **settings)
        if not return_dict:
            return (images,)
        return UnCLIPPipelineOutput(images=images, image_embeds=image_embeds)

    @torch.no_grad()
    def text_diff(
        self,
        image: ImageInput | UnCLIPInversion,
        source_prompt: str,
        target_prompt: str,
        num_frames: int = 5,
        max_angle: float = 0.5,
        decoder_num_inference_steps: int = INVERSION_DECODER_STEPS,
        super_res_num_inference_steps: int | list[int] = INVERSION_SUPER_RES_STEPS,
        decoder_guidance_scale: float = INVERSION_GUIDANCE_SCALE,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        fixed_point_iterations: int = DEFAULT_FIXED_POINT_ITERATIONS,
    ):
        r"""
        Edit an image towards a caption with a text diff (paper §3.3, Fig. 5). With ``z_i`` the image's CLIP
        embedding and ``z_t0``, ``z_t`` the CLIP text embeddings of ``source_prompt`` and ``target_prompt``, the
        direction ``z_d = normalise(z_t − z_t0)`` (given ``z_i``'s norm, so only the direction turns) and frame ``j``
        decodes ``slerp(z_i, z_d, θ_j)``, ``θ`` from 0 to ``max_angle``, with the image's DDIM-inverted x_T held fixed
        and DDIM η = 0: frame 0 is the reconstruction of the image.

        Args:
            image: one image (as :meth:`invert` takes) or its :class:`UnCLIPInversion` (whose settings are then used).
            source_prompt: a caption describing the image (the paper's ``"a photo of a cat"``).
            target_prompt: the caption to move towards (``"an anime drawing of a super saiyan cat"``).
            num_frames: frames, the reconstruction included (≥ 2).
            max_angle: the last frame's slerp position θ in (0, 1] (1 reaches ``z_d``; the paper uses 0.25–0.5).
            generator: draws the cascade's noise when it was not inverted.
            Other arguments as :meth:`invert` and ``__call__``.

        Returns:
            :class:`UnCLIPPipelineOutput` with the frames and their ``image_embeds``.
        """
        check_num_frames(num_frames)
        for name, value in (("source_prompt", source_prompt), ("target_prompt", target_prompt)):
            if not isinstance(value, str):
                raise TypeError(f"`{name}` must be one string, got {type(value).__name__}.")
            check_prompt(value, name)
        if isinstance(max_angle, bool) or not isinstance(max_angle, (int, float)) or not 0 < max_angle <= 1:
            raise ValueError(
                f"`max_angle` is the last frame's slerp position θ and must be in (0, 1] (the paper uses 0.25–0.5), "
                f"got {max_angle!r}."
            )
        settings = self.manipulation_settings(
            decoder_num_inference_steps,
            super_res_num_inference_steps,
            decoder_guidance_scale,
            fixed_point_iterations,
            output_type,
        )
        inversion = self._bipartite_latent(image, settings, fixed_point_iterations)
        settings = self._settings_of(inversion)
        device = self._execution_device
        text_embeds = self.encode_prompt([source_prompt, target_prompt], device, 1, False).embeds
        image_embeds = inversion.image_embeds.to(device=device, dtype=text_embeds.dtype)
        if text_embeds.shape[-1] != image_embeds.shape[-1]:
            raise ValueError(
                f"The text encoder's embeddings ({text_embeds.shape[-1]}) and the image embeddings "
                f"({image_embeds.shape[-1]}) differ in width: use the text and image towers of one CLIP model."
            )
        direction = text_diff_direction(text_embeds[:1], text_embeds[1:]) * image_embeds.norm(dim=-1, keepdim=True)

        positions = frame_positions(num_frames, float(max_angle))
        frame_embeds = slerp(image_embeds, direction, positions)[:, 0]
        super_res = inversion.super_res_latents
        if super_res is None:
            super_res = self.fixed_latents(generator, None, None, device, image_embeds.dtype)[1]
        latents = self.frame_latents([(x, x) for x in (inversion.decoder_latents, *super_res)], positions)
        images = self.decode_frames(frame_embeds, latents[0], latents[1:], output_type=output_type, **settings)
        if not return_dict:
            return (images,)
        return UnCLIPPipelineOutput(images=images, image_embeds=frame_embeds)
