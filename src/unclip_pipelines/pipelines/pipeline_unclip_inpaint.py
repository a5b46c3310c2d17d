"""
Text-guided inpainting with unCLIP (the edits of GLIDE and DALL·E 2), training-free: RePaint-style resampling
(Lugmayr et al. 2022) on the decoder and on every super-resolution stage.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from .image_encoding import ImageInput, image_to_tensor
from .pipeline_unclip import UnCLIPPipeline
from .stages import upscale
from .validation import check_positive_int, check_prompt

MaskInput = PIL.Image.Image | np.ndarray | torch.Tensor | list[PIL.Image.Image]


def mask_to_tensor(mask: MaskInput, name: str = "mask_image") -> torch.Tensor:
    """
    ``(B, 1, H, W)`` in {0, 1} (1 = regenerate) from a PIL image (white = regenerate), a list of them, an array
    ``(H, W)`` / ``(H, W, 1)`` / ``(B, H, W, 1)`` (bool, uint8 or [0, 1]) or a tensor ``(H, W)`` / ``(1, H, W)`` /
    ``(B, 1, H, W)``; binarised at 0.5.
    """
    if isinstance(mask, (PIL.Image.Image, list)):
        masks = mask if isinstance(mask, list) else [mask]
        if not masks or not all(isinstance(m, PIL.Image.Image) for m in masks):
            raise TypeError(f"A list `{name}` must hold PIL images.")
        mask = np.stack([np.asarray(m.convert("L"))[..., None] for m in masks])
    if isinstance(mask, np.ndarray):
        array = mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)
        if array.ndim == 2:
            array = array[None, ..., None]
        elif array.ndim == 3 and array.shape[-1] == 1:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] != 1:
            raise ValueError(f"An array `{name}` must be (H, W), (H, W, 1) or (B, H, W, 1), got {mask.shape}.")
        tensor = torch.from_numpy(array).permute(0, 3, 1, 2)
    elif isinstance(mask, torch.Tensor):
        tensor = mask.float()
        tensor = tensor[None, None] if tensor.ndim == 2 else tensor[None] if tensor.ndim == 3 else tensor
        if tensor.ndim != 4 or tensor.shape[1] != 1:
            raise ValueError(f"A tensor `{name}` must be (H, W), (1, H, W) or (B, 1, H, W), got {tuple(mask.shape)}.")
    else:
        raise TypeError(
            f"`{name}` must be a PIL image, a numpy array or a torch.Tensor (white / 1 = regenerate), "
            f"got {type(mask).__name__}."
        )
    if tensor.min() < 0 or tensor.max() > 1:
        raise ValueError(f"`{name}` must hold values in [0, 1] (or uint8 / PIL: 0 keep, 255 regenerate).")
    return (tensor >= 0.5).float()


class RePaint:
    """
    The :class:`~unclip_pipelines.pipelines.denoising.StepRefinement` of RePaint on one stage: after every step the
    kept region is replaced by the original noised to the step's timestep, and each step is run ``passes`` times,
    re-noising its output back by one step in between (jump length 1).
    """

    def __init__(self, original: torch.Tensor, keep: torch.Tensor, scheduler, generator, passes: int):
        self.original, self.keep, self.scheduler, self.generator = original, keep, scheduler, generator
        self.passes = passes

    def _alpha(self, timestep: int) -> torch.Tensor:
        alpha = self.scheduler.alphas_cumprod[timestep] if timestep >= 0 else torch.tensor(1.0)
        return alpha.to(device=self.original.device, dtype=self.original.dtype)

    def _noise(self) -> torch.Tensor:
        original = self.original
        return randn_tensor(original.shape, generator=self.generator, device=original.device, dtype=original.dtype)

    def after_step(self, stepped: torch.Tensor, timestep) -> torch.Tensor:
        prev = self.scheduler.previous_timestep(timestep)
        alpha = self._alpha(prev)
        known = alpha**0.5 * self.original + (1 - alpha) ** 0.5 * self._noise() if prev >= 0 else self.original
        return self.keep * known + (1 - self.keep) * stepped

    def restart(self, stepped: torch.Tensor, latents: torch.Tensor, timestep) -> tuple[torch.Tensor, torch.Tensor]:
        ratio = self._alpha(int(timestep)) / self._alpha(self.scheduler.previous_timestep(timestep))
        renoised = ratio**0.5 * stepped + (1 - ratio) ** 0.5 * self._noise()
        return renoised, renoised


class InpaintingRegion:
    """
    An inpainting task at every resolution of the pipeline: the original image (``[-1, 1]``) and the binary mask
    (1 = regenerate) at the output resolution. At a lower resolution a pixel is kept only when every output pixel it
    covers is kept (max-pooled mask), so the regenerated region always covers the mask.
    """

    def __init__(self, original: torch.Tensor, mask: torch.Tensor, resample_steps: int = 1):
        self.original, self.mask, self.resample_steps = original, mask, resample_steps

    def at(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(original, keep)`` at ``size``."""
        if tuple(size) == tuple(self.original.shape[-2:]):
            return self.original, 1 - self.mask
        original = upscale(self.original, tuple(size)).clamp(-1, 1)
        return original, 1 - F.adaptive_max_pool2d(self.mask, tuple(size))

    def refinement(self, size, scheduler, generator) -> RePaint:
        original, keep = self.at(size)
        return RePaint(original, keep, scheduler, generator, self.resample_steps)

    def paste(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` with the original pasted back where it is kept."""
        original, keep = self.at(image.shape[-2:])
        return keep * original.to(image.dtype) + (1 - keep) * image


class UnCLIPInpaintPipeline(UnCLIPPipeline):
    r"""
    Text-guided inpainting with unCLIP, without any training (DALL·E 2's edits, after GLIDE): the prompt goes through
    the prior as in :class:`UnCLIPPipeline`, and the decoder and each super-resolution stage regenerate the masked
    region with RePaint's scheme — after every step the unmasked region is replaced by the original image noised to
    that timestep, and optionally every step is resampled ``resample_steps`` times. The original is pasted back in
    the unmasked region after every stage, so unmasked pixels come out unchanged at the output resolution.

    Same components as :class:`UnCLIPPipeline` (any unCLIP / Karlo folder loads). Each stage samples with the
    :class:`UnCLIPScheduler` of its scheduler's config (ancestral, or DDIM with ``decoder_eta`` / ``super_res_eta``).
    """

    def check_inpaint_inputs(self, image, mask_image, batch: int, resample_steps) -> InpaintingRegion:
        """Validate the image and mask; returns the task at the output resolution, with ``batch`` rows."""
        check_positive_int(resample_steps, "resample_steps")
        if image is None or mask_image is None:
            raise ValueError("Inpainting needs both `image` and `mask_image` (white / 1 = the region to regenerate).")
        pixels = image_to_tensor(image)
        mask = mask_to_tensor(mask_image)
        if pixels.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                f"`mask_image` is {tuple(mask.shape[-2:])} (H, W) but `image` is {tuple(pixels.shape[-2:])}: pass a "
                "mask of the image's size."
            )
        for name, tensor in (("image", pixels), ("mask_image", mask)):
            if tensor.shape[0] not in (1, batch):
                raise ValueError(
                    f"`{name}` holds {tensor.shape[0]} images for {batch} outputs: pass one, or one per output "
                    "(prompts x num_images_per_prompt)."
                )
        size = self.output_sizes[-1]
        if tuple(pixels.shape[-2:]) != tuple(size):
            pixels = upscale(pixels, size).clamp(0, 1)
            mask = (F.interpolate(mask, size=size, mode="nearest") >= 0.5).float()
        device, dtype = self._execution_device, self.decoder.dtype
        original = (pixels * 2 - 1).expand(batch, -1, -1, -1).to(device=device, dtype=dtype)
        mask = mask.expand(batch, -1, -1, -1).to(device=device, dtype=dtype)
        return InpaintingRegion(original, mask, resample_steps)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: ImageInput | None = None,
        mask_image: MaskInput | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        prior_num_inference_steps: int = 25,
        decoder_num_inference_steps: int = 25,
        super_res_num_inference_steps: int | list[int] = 7,
        resample_steps: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prior_latents: torch.Tensor | None = None,
        decoder_latents: torch.Tensor | None = None,
        super_res_latents: torch.Tensor | list[torch.Tensor] | None = None,
        prior_guidance_scale: float = 4.0,
        decoder_guidance_scale: float = 8.0,
        prior_num_candidates: int = 1,
        decoder_eta: float | None = None,
        super_res_eta: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' convention)
    ):
        r"""
        Args:
            prompt: what the masked region should show (the whole image's caption works best, as in GLIDE).
            image: the image(s) to edit: PIL, ``np.ndarray`` (HWC / NHWC, uint8 or [0, 1]) or a ``torch.Tensor``
                ``(B, 3, H, W)`` in [0, 1]; one, or one per output. Resized to the output resolution if needed.
            mask_image: same size as ``image``; white / 1 = regenerate, black / 0 = keep (binarised at 0.5).
            resample_steps: RePaint's resampling: each step is run this many times, re-noising in between
                (1 = replacement only; RePaint uses 10). Costs this many times the model evaluations.
            decoder_eta, super_res_eta: sample a stage with DDIM at that η instead of ancestrally.
            Other arguments as :class:`UnCLIPPipeline`.

        Returns:
            :class:`UnCLIPPipelineOutput`; the unmasked pixels equal the input's (resized to the output resolution).
        """
        prompts = check_prompt(prompt)
        check_positive_int(num_images_per_prompt, "num_images_per_prompt")
        self._inpainting = self.check_inpaint_inputs(
            image, mask_image, len(prompts) * num_images_per_prompt, resample_steps
        )
        try:  # the text-to-image call of UnCLIPPipeline, with every stage keeping the unmasked region
            return super().__call__(
                prompt=prompts,
                negative_prompt=negative_prompt,
                num_images_per_prompt=num_images_per_prompt,
                prior_num_inference_steps=prior_num_inference_steps,
                decoder_num_inference_steps=decoder_num_inference_steps,
                super_res_num_inference_steps=super_res_num_inference_steps,
                generator=generator,
                prior_latents=prior_latents,
                decoder_latents=decoder_latents,
                super_res_latents=super_res_latents,
                prior_guidance_scale=prior_guidance_scale,
                decoder_guidance_scale=decoder_guidance_scale,
                prior_num_candidates=prior_num_candidates,
                decoder_eta=decoder_eta,
                super_res_eta=super_res_eta,
                output_type=output_type,
                return_dict=return_dict,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            )
        finally:
            self._inpainting = None
