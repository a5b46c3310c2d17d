"""Outputs of the unCLIP pipelines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class UnCLIPPipelineOutput(BaseOutput):
    """
    Args:
        images: the generated images (``pil``: list of PIL images; ``np``: ``(B, H, W, 3)`` in [0, 1]; ``pt``:
            ``(B, 3, H, W)`` in [0, 1]).
        image_embeds: the CLIP image embeddings the decoder was conditioned on, ``(B, D)``.
        scores: with ``rerank=True``, the CLIP similarity (cosine of image and text embeddings) of each image to its
            prompt, ``(B,)``; the images of each prompt are ordered by it, best first.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    image_embeds: torch.Tensor | None = None
    scores: torch.Tensor | None = None


@dataclass
class UnCLIPInversion(BaseOutput):
    """
    The bipartite latent of images (paper §3.1): CLIP image embeddings plus the DDIM-inverted decoder noise x_T.
    Decoding it with DDIM at η = 0 (``pipe(**inversion.call_kwargs())``) reconstructs the images; η > 0 gives
    variations that keep what CLIP sees.

    Args:
        image_embeds: ``(B, D)`` CLIP image embeddings the inversion was conditioned on.
        decoder_latents: ``(B, C, h, w)`` the decoder's inverted x_T.
        super_res_latents: the inverted x_T of each super-resolution stage (``None`` when the cascade was not
            inverted; it then samples from fresh noise).
        decoder_num_inference_steps, super_res_num_inference_steps, decoder_guidance_scale: the settings of the
            inversion, which the reconstruction must reuse.
    """

    image_embeds: torch.Tensor
    decoder_latents: torch.Tensor
    super_res_latents: list[torch.Tensor] | None = None
    decoder_num_inference_steps: int | None = None
    super_res_num_inference_steps: list[int] | None = None
    decoder_guidance_scale: float | None = None

    def call_kwargs(self, eta: float = 0.0) -> dict:
        """Keyword arguments of the variation pipeline's ``__call__`` that decode this latent with DDIM at ``eta``."""
        kwargs = dict(
            image_embeddings=self.image_embeds,
            decoder_latents=self.decoder_latents,
            decoder_eta=eta,
            decoder_num_inference_steps=self.decoder_num_inference_steps,
            decoder_guidance_scale=self.decoder_guidance_scale,
        )
        if self.super_res_num_inference_steps:
            kwargs["super_res_num_inference_steps"] = self.super_res_num_inference_steps
        if self.super_res_latents is not None:
            kwargs.update(super_res_latents=self.super_res_latents, super_res_eta=eta)
        return kwargs


@dataclass
class UnCLIPPriorPipelineOutput(BaseOutput):
    """
    Args:
        image_embeds: CLIP image embeddings sampled by the prior, ``(B, D)``.
        negative_image_embeds: the prior's embeddings for ``negative_prompt``, or ``None`` when none was given.
    """

    image_embeds: torch.Tensor
    negative_image_embeds: torch.Tensor | None = None
