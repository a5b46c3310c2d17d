"""
DDIM inversion of the decoder and the super-resolution cascade (paper §3.1), and decoding from given latents: the
machinery behind variations from an inverted latent, interpolations (§3.2), text diffs (§3.3) and the PCA probe (§4).
"""

from __future__ import annotations

import numbers

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..manipulations import slerp
from ..schedulers.scheduling_unclip import UnCLIPInverseScheduler
from .denoising import denoise
from .null_branch import refuse_port_inversion
from .output import UnCLIPInversion
from .stages import TextConditioning, upscale

NOISE_MODES = ("fixed", "slerp")

# Defaults of the manipulations that decode from an inverted latent (invert, interpolate, text_diff). Classifier-free
# guidance makes DDIM inversion inexact (the guided update is not the ODE that was inverted), 25 decoder steps
# leave a first step so coarse that some inversions diverge, and 7 steps of an upsampler are too coarse to invert;
# docs/manipulations.md has the measurements.
#: decoder guidance of the manipulations (1: no guidance, the exactly invertible setting)
INVERSION_GUIDANCE_SCALE = 1.0
#: decoder steps of the manipulations
INVERSION_DECODER_STEPS = 50
#: steps per super-resolution stage of the manipulations
INVERSION_SUPER_RES_STEPS = 25
#: default number of fixed-point refinements per inversion step (see :class:`FixedPointInversion`)
DEFAULT_FIXED_POINT_ITERATIONS = 5


class FixedPointInversion:
    r"""
    Fixed-point DDIM inversion (as in AIDI / ReNoise): plain DDIM inversion evaluates the model at the known, less
    noisy sample instead of the unknown x_t; each extra pass re-evaluates it at the latest estimate of x_t and redoes
    the step from the same known sample. At convergence the sampler's step from x_t lands exactly on the known sample
    (clipping of x_0 included), which matters most at unCLIP's first step, where ᾱ_{T-1} ≈ 2e-9 amplifies any
    mismatch of the model's prediction ~1500-fold.
    """

    def __init__(self, iterations: int):
        self.passes = 1 + iterations

    def after_step(self, stepped: torch.Tensor, timestep) -> torch.Tensor:
        return stepped

    def restart(self, stepped: torch.Tensor, latents: torch.Tensor, timestep) -> tuple[torch.Tensor, torch.Tensor]:
        return stepped, latents


def check_fixed_point_iterations(value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`fixed_point_iterations` must be an integer ≥ 0, got {value!r}.")


def check_noise_mode(noise) -> None:
    if noise not in NOISE_MODES:
        raise ValueError(
            f"`noise` must be 'fixed' (one decoder x_T for every frame) or 'slerp' (x_T slerped between the two "
            f"ends), got {noise!r}."
        )


def frame_positions(num_frames: int, end: float = 1.0) -> torch.Tensor:
    """``num_frames`` evenly spaced interpolation positions from 0 to ``end``, both included."""
    return torch.linspace(0.0, end, num_frames, dtype=torch.float64)


class InversionMixin:
    """DDIM inversion of the decoder and cascade, and decoding from fixed latents; needs :class:`DecoderStageMixin`."""

    def invert_stage(self, stage: str, scheduler, image: torch.Tensor, num_inference_steps: int, predict, iterations):
        """x_T of one stage: ``image`` (its clean output, [-1, 1]) run up the DDIM path of ``scheduler``'s config."""
        return denoise(
            self,
            stage=f"{stage}_inversion",
            scheduler=UnCLIPInverseScheduler.from_config(scheduler.config),
            latents=image,
            num_inference_steps=num_inference_steps,
            predict=predict,
            generator=None,
            refinement=FixedPointInversion(iterations) if iterations else None,
        )

    def invert_pixels(
        self,
        pixels: torch.Tensor,
        image_embeds: torch.Tensor,
        text: TextConditioning,
        *,
        decoder_num_inference_steps: int,
        super_res_num_inference_steps: list[int],
        decoder_guidance_scale: float,
        invert_super_res: bool = True,
        fixed_point_iterations: int = DEFAULT_FIXED_POINT_ITERATIONS,
    ) -> UnCLIPInversion:
        """
        Invert images ``pixels`` (``(B, 3, H, W)`` in [-1, 1], any size) conditioned on their ``image_embeds``. The
        decoder inverts them resized to its resolution; each cascade stage (with ``invert_super_res``) inverts them
        at its resolution, conditioned on the image at the stage below, as its sampling will be after an exact
        reconstruction.
        """
        refuse_port_inversion(self.decoder, "decoder")
        if invert_super_res:
            for index, (first, _) in enumerate(self.super_res_stages):
                refuse_port_inversion(first, f"super-resolution stage {index + 1}")
        sizes = self.output_sizes
        stage_images = [upscale(pixels, size).clamp(-1, 1) for size in sizes]
        predict, _ = self.decoder_predictor(image_embeds, text, decoder_guidance_scale)
        decoder_latents = self.invert_stage(
            "decoder",
            self.decoder_scheduler,
            stage_images[0],
            decoder_num_inference_steps,
            predict,
            fixed_point_iterations,
        )
        super_res_latents = None
        if invert_super_res and self.super_res_stages:
            super_res_latents = []
            for index, (first, last) in enumerate(self.super_res_stages):
                upscaled = upscale(stage_images[index], sizes[index + 1])
                # the inversion runs the schedule backwards: its first step is the sampler's last
                predict = self.super_res_predictor(first, last, upscaled, is_last_step=lambda i: i == 0)
                super_res_latents.append(
                    self.invert_stage(
                        f"super_res_{index + 1}",
                        self.super_res_scheduler,
                        stage_images[index + 1],
                        super_res_num_inference_steps[index],
                        predict,
                        fixed_point_iterations,
                    )
                )
        self.maybe_free_model_hooks()
        return UnCLIPInversion(
            image_embeds=image_embeds,
            decoder_latents=decoder_latents,
            super_res_latents=super_res_latents,
            decoder_num_inference_steps=decoder_num_inference_steps,
            super_res_num_inference_steps=list(super_res_num_inference_steps),
            decoder_guidance_scale=decoder_guidance_scale,
        )

    def fixed_latents(
        self, generator, decoder_latents=None, super_res_latents=None, device=None, dtype=None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """
        One decoder x_T ``(1, C, h, w)`` and one x_T per cascade stage, shared by every frame: the given ones
        (checked), or drawn from ``generator``.
        """
        if isinstance(super_res_latents, torch.Tensor):
            super_res_latents = [super_res_latents]
        sizes = self.output_sizes
        shapes = [(1, self.decoder.config.in_channels, *sizes[0])]
        for (first, _), size in zip(self.super_res_stages, sizes[1:]):
            shapes.append((1, first.config.in_channels - self.decoder.config.in_channels, *size))
        given = [decoder_latents, *(super_res_latents or [None] * (len(shapes) - 1))]
        if len(given) != len(shapes):
            raise ValueError(f"`super_res_latents` needs one tensor per cascade stage ({len(shapes) - 1}).")
        latents = []
        for index, (shape, value) in enumerate(zip(shapes, given)):
            name = "decoder_latents" if index == 0 else f"super_res_latents[{index - 1}]"
            if value is None:
                value = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            elif not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                raise ValueError(f"`{name}` must be a tensor of shape {shape} (one x_T shared by every frame).")
            latents.append(value.to(device=device, dtype=dtype))
        return latents[0], latents[1:]

    def frame_latents(
        self, ends: list[tuple[torch.Tensor, torch.Tensor]], positions: torch.Tensor
    ) -> list[torch.Tensor]:
        """
        Per-frame latents of each stage: ``ends`` holds, per stage, the latents ``(1, ...)`` at both ends; equal
        ends are repeated ("fixed" noise), different ones slerped ("slerp" noise).
        """
        frames = []
        for start, end in ends:
            if start is end or torch.equal(start, end):
                frames.append(start.expand(len(positions), *start.shape[1:]).clone())
            else:
                frames.append(slerp(start, end, positions)[:, 0])
        return frames

    def decode_frames(
        self,
        image_embeds: torch.Tensor,
        decoder_latents: torch.Tensor,
        super_res_latents: list[torch.Tensor] | None,
        *,
        decoder_num_inference_steps: int,
        super_res_num_inference_steps: list[int],
        decoder_guidance_scale: float,
        output_type: str,
        eta: float = 0.0,
        generator=None,
    ):
        """
        Decode one frame per row of ``image_embeds`` from the given latents, with DDIM at ``eta`` in every stage and
        the empty caption (as variations are decoded).
        """
        text = self.encode_prompt([""] * image_embeds.shape[0], self._execution_device, 1, decoder_guidance_scale > 1)
        return self.decode(
            image_embeds.to(device=text.embeds.device, dtype=text.embeds.dtype),
            text,
            decoder_num_inference_steps=decoder_num_inference_steps,
            super_res_num_inference_steps=super_res_num_inference_steps,
            decoder_guidance_scale=decoder_guidance_scale,
            generator=generator,
            decoder_latents=decoder_latents,
            super_res_latents=super_res_latents,
            output_type=output_type,
            decoder_eta=eta,
            super_res_eta=eta,
        )
