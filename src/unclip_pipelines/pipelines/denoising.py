"""The one sampling loop every unCLIP stage runs, for any diffusers scheduler."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..schedulers.scheduling_unclip import UnCLIPScheduler

LEARNED_VARIANCE_TYPES = ("learned", "learned_range")


def uses_learned_variance(scheduler) -> bool:
    """Whether ``scheduler`` consumes the model's extra variance channels (UnCLIP/DDPM/DPM-Solver learned_range)."""
    # `from_config` keeps keys a scheduler does not know in its config, so ask its signature, not its config
    if "variance_type" not in inspect.signature(type(scheduler).__init__).parameters:
        return False
    return scheduler.config.get("variance_type") in LEARNED_VARIANCE_TYPES


def step_kwargs(scheduler, generator: torch.Generator | list[torch.Generator] | None, **extra) -> dict:
    """Keyword arguments of ``scheduler.step`` that this scheduler accepts (e.g. DDIM's ``eta``, ``generator``)."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs = {"generator": generator, **extra}
    return {key: value for key, value in kwargs.items() if key in accepted and value is not None}


def as_unclip_scheduler(scheduler) -> UnCLIPScheduler:
    """
    ``scheduler`` itself if it is an :class:`UnCLIPScheduler`, else one built from its config (same noise schedule,
    prediction type and clipping). DDIM η-sampling, DDIM inversion and RePaint run on it, so that sampling and
    inversion share Karlo's timesteps and cumulative alphas whatever scheduler a stage was given.
    """
    if isinstance(scheduler, UnCLIPScheduler):
        return scheduler
    return UnCLIPScheduler.from_config(scheduler.config)


class StepRefinement(Protocol):
    """
    Runs each step of :func:`denoise` ``passes`` times: RePaint's resampling (inpainting) and fixed-point DDIM
    inversion are both "step, adjust, step again from an adjusted state".
    """

    passes: int

    def after_step(self, stepped: torch.Tensor, timestep) -> torch.Tensor:
        """Adjust the step's output (e.g. paste the known region); called after every pass."""

    def restart(
        self, stepped: torch.Tensor, latents: torch.Tensor, timestep
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(model_sample, step_sample)`` for the next pass: what the model sees and what ``step`` moves."""


def prepare_latents(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | list[torch.Generator] | None,
    latents: torch.Tensor | None,
    scheduler,
    name: str,
) -> torch.Tensor:
    """Draw the initial noise of a stage, or check user-given ``latents``, and scale by the scheduler's sigma."""
    if latents is None:
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    else:
        if not isinstance(latents, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(latents).__name__}.")
        if tuple(latents.shape) != tuple(shape):
            raise ValueError(
                f"`{name}` has shape {tuple(latents.shape)} but this stage needs {tuple(shape)} "
                "(batch = prompts x num_images_per_prompt)."
            )
        latents = latents.to(device=device, dtype=dtype)
    return latents * scheduler.init_noise_sigma


def denoise(
    pipe,
    *,
    stage: str,
    scheduler,
    latents: torch.Tensor,
    num_inference_steps: int,
    predict: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor],
    generator: torch.Generator | list[torch.Generator] | None,
    callback_on_step_end: Callable | None = None,
    callback_on_step_end_tensor_inputs: list[str] | None = None,
    refinement: StepRefinement | None = None,
    **step_extra,
) -> torch.Tensor:
    """
    Run ``scheduler`` from ``latents`` for ``num_inference_steps``.

    ``predict(i, t, model_input)`` returns the (guided) model output for step ``i`` at timestep ``t``. When the scheduler
    does not use a learned variance, extra output channels are dropped before ``step``. ``callback_on_step_end`` is
    called as in diffusers (``callback(pipe, i, t, callback_kwargs) -> dict``); it may replace ``latents``.
    ``pipe.stage`` names the running stage ("prior", "decoder", "super_res_1", ...). A ``refinement``
    (:class:`StepRefinement`) repeats and adjusts every step (RePaint inpainting, fixed-point inversion). A
    ``predict`` with an ``observe_step`` method gets every scheduler output (self-conditioning reads its x_0).
    """
    scheduler.set_timesteps(num_inference_steps, device=latents.device)
    timesteps = scheduler.timesteps
    kwargs = step_kwargs(scheduler, generator, **step_extra)
    keep_variance = uses_learned_variance(scheduler)
    pipe._stage = stage
    pipe._num_timesteps = len(timesteps)

    passes = refinement.passes if refinement is not None else 1
    observe_step = getattr(predict, "observe_step", None)  # self-conditioned networks read each step's x_0

    for i, t in enumerate(pipe.progress_bar(timesteps)):
        model_sample = step_sample = stepped = latents
        for attempt in range(passes):
            if attempt:
                model_sample, step_sample = refinement.restart(stepped, latents, t)
            model_input = scheduler.scale_model_input(model_sample, t)
            model_output = predict(i, t, model_input)
            if not keep_variance and model_output.shape[1] != latents.shape[1] and latents.ndim == 4:
                model_output = model_output[:, : latents.shape[1]]
            output = scheduler.step(model_output, t, step_sample, **kwargs)
            stepped = output.prev_sample
            if observe_step is not None:
                observe_step(output)
            if refinement is not None:
                stepped = refinement.after_step(stepped, t)
        latents = stepped

        if callback_on_step_end is not None:
            local = {"latents": latents, "model_output": model_output}
            callback_kwargs = {name: local[name] for name in callback_on_step_end_tensor_inputs or []}
            callback_outputs = callback_on_step_end(pipe, i, t, callback_kwargs)
            latents = callback_outputs.pop("latents", latents)
    pipe._stage = None
    return latents


def guide(model_output: torch.Tensor, guidance_scale: float, channels: int | None = None) -> torch.Tensor:
    """
    Classifier-free guidance on a batch laid out ``[unconditional, conditional]``.

    With ``channels`` set (a decoder that also predicts its variance), guidance applies to the first ``channels``
    channels only and the conditional branch's variance channels are kept, as in GLIDE and Karlo.
    """
    uncond, cond = model_output.chunk(2)
    if channels is None or model_output.shape[1] == channels:
        return uncond + guidance_scale * (cond - uncond)
    uncond_eps = uncond[:, :channels]
    cond_eps, cond_rest = cond[:, :channels], cond[:, channels:]
    return torch.cat([uncond_eps + guidance_scale * (cond_eps - uncond_eps), cond_rest], dim=1)
