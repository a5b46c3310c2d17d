"""Image variations with unCLIP (paper §3.1): encode with CLIP, decode the image embedding again."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import PIL.Image
import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from transformers import CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from ..models.text_proj import UnCLIPTextProjModel
from .pipeline_unclip_decoder import DECODER_OFFLOAD_SEQ, UnCLIPDecoderPipeline

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | list[PIL.Image.Image] | list[np.ndarray]


class UnCLIPImageVariationPipeline(UnCLIPDecoderPipeline):
    r"""
    Generates variations of images: each image is encoded by the CLIP image encoder and its embedding is decoded with
    fresh decoder noise, so the result keeps what CLIP sees and varies the rest. Loads
    ``kakaobrain/karlo-v1-alpha-image-variations`` folders unchanged.

    Args:
        decoder, text_encoder, tokenizer, text_proj, decoder_scheduler, super_res_*: as :class:`UnCLIPDecoderPipeline`.
        feature_extractor ([`CLIPImageProcessor`]): prepares images for the image encoder.
        image_encoder ([`CLIPVisionModelWithProjection`]): frozen CLIP image encoder.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->" + DECODER_OFFLOAD_SEQ

    def __init__(
        self,
        decoder: UNet2DConditionModel,
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        text_proj: UnCLIPTextProjModel,
        feature_extractor: CLIPImageProcessor,
        image_encoder: CLIPVisionModelWithProjection,
        super_res_first: UNet2DModel | None,
        super_res_last: UNet2DModel | None,
        decoder_scheduler,
        super_res_scheduler=None,
        super_res_2_first: UNet2DModel | None = None,
        super_res_2_last: UNet2DModel | None = None,
        super_res_3_first: UNet2DModel | None = None,
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
        )
        self.register_modules(feature_extractor=feature_extractor, image_encoder=image_encoder)

    def encode_image(self, image: ImageInput, device: torch.device | None = None) -> torch.Tensor:
        """
        CLIP image embeddings ``(B, D)`` of ``image``: PIL image(s), ``np.ndarray`` (HWC / NHWC, uint8 or [0, 1]), or
        a ``torch.Tensor`` ``(B, 3, H, W)`` already prepared by the feature extractor.
        """
        device = device or self._execution_device
        dtype = next(self.image_encoder.parameters()).dtype
        if isinstance(image, torch.Tensor):
            if image.ndim != 4 or image.shape[1] != 3:
                raise ValueError(
                    f"A tensor `image` must be (batch, 3, height, width) pixel values from the feature extractor, "
                    f"got shape {tuple(image.shape)}."
                )
            pixel_values = image
        else:
            images = image if isinstance(image, list) else [image]
            if isinstance(image, np.ndarray) and image.ndim == 4:
                images = list(image)
            if not images:
                raise ValueError("`image` is an empty list: pass at least one image.")
            bad = [type(im).__name__ for im in images if not isinstance(im, (PIL.Image.Image, np.ndarray))]
            if bad:
                raise TypeError(
                    f"`image` must be PIL images, numpy arrays or a torch.Tensor; got {', '.join(sorted(set(bad)))}."
                )
            pixel_values = self.feature_extractor(images=images, return_tensors="pt").pixel_values
        return self.image_encoder(pixel_values.to(device=device, dtype=dtype)).image_embeds

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
    ):
        r"""
        Args:
            image: the image(s) to vary (see :meth:`encode_image`), or
            image_embeddings: their CLIP image embeddings ``(B, D)`` instead.
            num_images_per_prompt: variations per image.
            prompt: optional caption(s) for the decoder's text conditioning (default: empty, as Karlo).
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
        )
