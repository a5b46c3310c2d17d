"""Probing the CLIP latent space with the decoder (paper §4, Fig. 7): decode PCA reconstructions of embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch

from ..manipulations import UnCLIPPCA
from .image_encoding import ImageInput, image_to_tensor
from .stages import upscale


@torch.no_grad()
def probe_pca_grid(
    pipe,
    images: ImageInput,
    ks: Sequence[int],
    pca: UnCLIPPCA | None = None,
    *,
    decoder_num_inference_steps: int = 25,
    super_res_num_inference_steps: int | list[int] = 7,
    decoder_guidance_scale: float = 8.0,
    generator: torch.Generator | None = None,
    decoder_latents: torch.Tensor | None = None,
    super_res_latents: torch.Tensor | list[torch.Tensor] | None = None,
    include_source: bool = True,
) -> PIL.Image.Image:
    r"""
    The grid of the paper's Fig. 7: one row per image, the source image first (``include_source``), then the decoding
    of its CLIP image embedding reconstructed from the first ``k`` principal components, one column per ``k`` in
    ``ks`` (``k = 0`` decodes the PCA mean).

    Every cell is decoded with the same decoder and cascade x_T (``decoder_latents`` ``(1, C, h, w)`` /
    ``super_res_latents``, or drawn once from ``generator``) and DDIM η = 0, so the columns differ only by the
    information the first ``k`` components carry.

    Args:
        pipe: a pipeline with a CLIP image encoder and a decoder: :class:`UnCLIPImageVariationPipeline`, or
            :class:`UnCLIPPipeline` given ``image_encoder`` / ``feature_extractor``.
        images: the images (as :meth:`UnCLIPImageVariationPipeline.invert` takes; a list may mix sizes), each
            resized to the output resolution.
        ks: numbers of principal components, each in ``[0, pca.num_components]``.
        pca: a fitted :class:`UnCLIPPCA` (e.g. ``UnCLIPPCA.from_pretrained(model_dir, subfolder="pca")``); by default
            one is fitted on the embeddings of ``images`` themselves (at most ``len(images) - 1`` components, so
            only useful for a quick look).
        decoder_num_inference_steps, super_res_num_inference_steps, decoder_guidance_scale: decoding settings.
        include_source: put the source image in the first column.

    Returns:
        A PIL image of ``len(images)`` rows and ``len(ks) (+ 1)`` columns at the pipeline's output resolution.
    """
    pipe.require_image_encoder("probe_pca_grid")
    if isinstance(ks, (int, np.integer)) or not len(ks):
        raise ValueError("`ks` must be a non-empty list of numbers of principal components, e.g. [1, 4, 16, 32].")
    size = pipe.output_sizes[-1]
    items = images if isinstance(images, list) else [images]
    pixels = torch.cat([upscale(image_to_tensor(item), size).clamp(0, 1) for item in items])
    embeds = pipe.encode_pixels(pixels)
    if pca is None:
        pca = UnCLIPPCA.fit(embeds)
    if pca.config.embedding_dim != embeds.shape[-1]:
        raise ValueError(
            f"The PCA was fitted on embeddings of width {pca.config.embedding_dim}, the pipeline's are "
            f"{embeds.shape[-1]} wide: fit it on this CLIP model's image embeddings."
        )
    for k in ks:
        pca._check_k(k)
    pca = pca.to(embeds.device)
    sr_steps = pipe.check_decoder_inputs(
        decoder_num_inference_steps, super_res_num_inference_steps, decoder_guidance_scale, "pt", []
    )
    device, dtype = embeds.device, embeds.dtype
    decoder_x, super_res_x = pipe.fixed_latents(generator, decoder_latents, super_res_latents, device, dtype)

    rows = []
    for row in range(embeds.shape[0]):
        cells = torch.cat([pca.reconstruct(embeds[row : row + 1], k) for k in ks])
        count = cells.shape[0]
        decoded = pipe.decode_frames(
            cells,
            decoder_x.expand(count, *decoder_x.shape[1:]),
            [x.expand(count, *x.shape[1:]) for x in super_res_x],
            decoder_num_inference_steps=decoder_num_inference_steps,
            super_res_num_inference_steps=sr_steps,
            decoder_guidance_scale=decoder_guidance_scale,
            output_type="pt",
        )
        if include_source:
            decoded = torch.cat([pixels[row : row + 1].to(decoded.device, decoded.dtype), decoded])
        rows.append(torch.cat(list(decoded), dim=-1))
    grid = torch.cat(rows, dim=-2)
    array = (grid.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
    return PIL.Image.fromarray(array)
