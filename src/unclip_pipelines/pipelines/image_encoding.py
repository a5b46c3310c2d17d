"""The CLIP image side of a pipeline: image embeddings (variations, manipulations) and CLIP re-ranking."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from ..manipulations import normalize

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | list[PIL.Image.Image] | list[np.ndarray]


def image_to_tensor(image: ImageInput, name: str = "image") -> torch.Tensor:
    """
    Pixels ``(B, 3, H, W)`` in [0, 1] of PIL image(s), ``np.ndarray`` (HWC / NHWC, uint8 or floats in [0, 1]) or a
    ``torch.Tensor`` ``(3, H, W)`` / ``(B, 3, H, W)`` in [0, 1]; every image must have the same size.
    """
    if isinstance(image, torch.Tensor):
        pixels = image[None] if image.ndim == 3 else image
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"A tensor `{name}` must be (3, H, W) or (batch, 3, H, W), got {tuple(image.shape)}.")
        pixels = pixels.float()
    else:
        images = image if isinstance(image, list) else [image]
        if isinstance(image, np.ndarray) and image.ndim == 4:
            images = list(image)
        if not images:
            raise ValueError(f"`{name}` is an empty list: pass at least one image.")
        arrays = []
        for im in images:
            if isinstance(im, PIL.Image.Image):
                im = np.asarray(im.convert("RGB"))
            if not isinstance(im, np.ndarray):
                raise TypeError(
                    f"`{name}` must be PIL images, numpy arrays or a torch.Tensor, got {type(im).__name__}."
                )
            if im.ndim != 3 or im.shape[-1] != 3:
                raise ValueError(f"An array `{name}` must be (H, W, 3) or (batch, H, W, 3), got {im.shape}.")
            arrays.append(im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im.astype(np.float32))
        sizes = {a.shape for a in arrays}
        if len(sizes) > 1:
            raise ValueError(f"The images of `{name}` have different sizes {sorted(sizes)}: resize them to one size.")
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    if pixels.min() < 0 or pixels.max() > 1:
        raise ValueError(f"`{name}` must hold values in [0, 1] (or uint8 arrays / PIL images).")
    return pixels.contiguous()


def tensor_to_uint8_arrays(pixels: torch.Tensor) -> list[np.ndarray]:
    """``(B, 3, H, W)`` in [0, 1] -> a list of HWC uint8 arrays (what the CLIP feature extractor takes)."""
    pixels = (pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return list(pixels.permute(0, 2, 3, 1).cpu().numpy())


class ImageEncodingMixin:
    """Encodes images with the pipeline's CLIP ``feature_extractor`` and ``image_encoder``."""

    def require_image_encoder(self, feature: str) -> None:
        """Raise a ``ValueError`` naming the fix when the pipeline has no CLIP image encoder."""
        if getattr(self, "image_encoder", None) is None or getattr(self, "feature_extractor", None) is None:
            raise ValueError(
                f"{feature} needs a CLIP image encoder: pass `image_encoder` (CLIPVisionModelWithProjection) and "
                "`feature_extractor` (CLIPImageProcessor) of the CLIP model the pipeline was trained with, e.g. "
                "`UnCLIPPipeline.from_pretrained(path, image_encoder=..., feature_extractor=...)`."
            )

    def encode_image(self, image: ImageInput, device: torch.device | None = None) -> torch.Tensor:
        """
        CLIP image embeddings ``(B, D)`` of ``image``: PIL image(s), ``np.ndarray`` (HWC / NHWC, uint8 or [0, 1]), or
        a ``torch.Tensor`` ``(B, 3, H, W)`` already prepared by the feature extractor.
        """
        self.require_image_encoder("Encoding images")
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

    def encode_pixels(self, image: ImageInput, device: torch.device | None = None) -> torch.Tensor:
        """
        CLIP image embeddings of raw images, as :func:`image_to_tensor` reads them (a tensor holds [0, 1] pixels
        here, not feature-extractor output as in :meth:`encode_image`).
        """
        return self.encode_image(tensor_to_uint8_arrays(image_to_tensor(image)), device=device)

    def clip_scores(self, images: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """
        CLIP similarity ``(B,)`` of generated images (``(B, 3, H, W)`` in [0, 1]) to their CLIP text embeddings
        ``(B, D)``: the cosine of the image and text embeddings, as CLIP's logits (without the temperature).
        """
        image_embeds = self.encode_image(tensor_to_uint8_arrays(images), device=text_embeds.device)
        return (normalize(image_embeds.float()) * normalize(text_embeds.float())).sum(-1)

    def rerank(
        self, images: torch.Tensor, image_embeds: torch.Tensor, text_embeds: torch.Tensor, group_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Order each prompt's ``group_size`` consecutive images by :meth:`clip_scores`, best first. Returns the images,
        their image embeddings and their scores, reordered.
        """
        scores = self.clip_scores(images, text_embeds)
        order = scores.view(-1, group_size).argsort(dim=1, descending=True, stable=True)
        order = (order + torch.arange(0, scores.numel(), group_size, device=order.device)[:, None]).flatten()
        return images[order.to(images.device)], image_embeds[order.to(image_embeds.device)], scores[order]
