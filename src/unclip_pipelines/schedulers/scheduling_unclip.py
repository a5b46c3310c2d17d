"""unCLIP's ancestral sampler: DDPM with respaced betas, reading Karlo's scheduler configs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

_BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")
_VARIANCE_TYPES = ("fixed_small_log", "learned_range")
_PREDICTION_TYPES = ("epsilon", "sample")


@dataclass
class UnCLIPSchedulerOutput(BaseOutput):
    """
    Args:
        prev_sample: the sample at the previous (less noisy) timestep.
        pred_original_sample: the model's (clipped) estimate of x_0.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class UnCLIPScheduler(SchedulerMixin, ConfigMixin):
    r"""
    The sampler of Karlo / unCLIP: DDPM ancestral sampling in which, when steps are skipped, the beta of each step is
    recomputed from the cumulative alphas (``beta = 1 - ᾱ_t / ᾱ_prev``), as in Nichol & Dhariwal's respacing.

    Config-compatible with the ``UnCLIPScheduler`` folders of ``kakaobrain/karlo-v1-alpha`` and numerically identical
    to diffusers' deprecated implementation. Unlike it, :meth:`step` works out the previous timestep from
    :meth:`set_timesteps` when ``prev_timestep`` is not given, so it is called like every other diffusers scheduler,
    and ``beta_schedule`` is always kept explicit in the config, so ``OtherScheduler.from_config(this.config)`` keeps
    the model's noise schedule.

    Parameters:
        num_train_timesteps: number of diffusion steps the model was trained with.
        variance_type: ``"fixed_small_log"`` (the posterior variance, clamped in log space) or ``"learned_range"``
            (the model's extra output channels interpolate between the posterior variance and beta in log space).
        clip_sample: whether to clip the predicted x_0 to ``[-clip_sample_range, clip_sample_range]``.
        clip_sample_range: the clip range (Karlo: 1.0 for images, 5.0 for the prior's normalised embeddings).
        prediction_type: ``"epsilon"`` (noise) or ``"sample"`` (x_0, as the diffusion prior predicts).
        beta_schedule: ``"squaredcos_cap_v2"`` (the cosine schedule of unCLIP) or ``"linear"``.
        beta_start, beta_end: the range of the ``linear`` schedule.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        variance_type: Literal["fixed_small_log", "learned_range"] = "fixed_small_log",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        prediction_type: Literal["epsilon", "sample"] = "epsilon",
        beta_schedule: Literal["squaredcos_cap_v2", "linear"] = "squaredcos_cap_v2",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
    ) -> None:
        if beta_schedule not in _BETA_SCHEDULES:
            raise ValueError(f"`beta_schedule` must be one of {_BETA_SCHEDULES}, got {beta_schedule!r}.")
        if variance_type not in _VARIANCE_TYPES:
            raise ValueError(f"`variance_type` must be one of {_VARIANCE_TYPES}, got {variance_type!r}.")
        if prediction_type not in _PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {_PREDICTION_TYPES}, got {prediction_type!r}.")
        self._keep_config_explicit()

        if beta_schedule == "squaredcos_cap_v2":
            self.betas = betas_for_alpha_bar(num_train_timesteps)
        else:
            self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.one = torch.tensor(1.0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(num_train_timesteps)[::-1].copy())

    def _keep_config_explicit(self) -> None:
        # ConfigMixin lists arguments left at their defaults in `_use_default_values`, and `from_config` of another
        # scheduler class then drops them (DPMSolverMultistepScheduler would silently fall back to a linear beta
        # schedule). The noise schedule, prediction type and clipping belong to the trained model, so every value
        # travels with the config.
        if "_use_default_values" in self._internal_dict:
            internal = dict(self._internal_dict)
            internal.pop("_use_default_values")
            self._internal_dict = FrozenDict(internal)

    @property
    def variance_type(self) -> str:
        return self.config.variance_type

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """Identity; present so the scheduler is interchangeable with those that scale the model input."""
        return sample

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """
        Karlo's spacing: ``round(arange(N) * (T - 1) / (N - 1))`` reversed, so the first step is ``T - 1`` and the
        last is 0. ``N = 1`` samples in one step from ``T - 1``.
        """
        num_train = self.config.num_train_timesteps
        if not isinstance(num_inference_steps, (int, np.integer)) or isinstance(num_inference_steps, bool):
            raise TypeError(f"`num_inference_steps` must be an int, got {type(num_inference_steps).__name__}.")
        if not 1 <= num_inference_steps <= num_train:
            raise ValueError(
                f"`num_inference_steps` must be between 1 and num_train_timesteps={num_train}, "
                f"got {num_inference_steps}."
            )
        self.num_inference_steps = int(num_inference_steps)
        if num_inference_steps == 1:
            timesteps = np.array([num_train - 1], dtype=np.int64)
        else:
            step_ratio = (num_train - 1) / (num_inference_steps - 1)
            timesteps = (np.arange(num_inference_steps) * step_ratio).round()[::-1].copy().astype(np.int64)
        self.timesteps = torch.from_numpy(timesteps).to(device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The timestep that follows ``timestep`` in the schedule set by :meth:`set_timesteps` (-1 after the last)."""
        t = int(timestep)
        if self.num_inference_steps is None:
            return t - 1
        later = self.timesteps[self.timesteps < t]
        return int(later[0]) if len(later) else -1

    def _alpha_prod(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else self.one

    def _step_beta(self, t: int, prev_t: int) -> torch.Tensor:
        if prev_t == t - 1:
            return self.betas[t]
        return 1 - self._alpha_prod(t) / self._alpha_prod(prev_t)

    def _log_variance(self, t: int, prev_t: int, predicted_variance: torch.Tensor | None) -> torch.Tensor:
        beta = self._step_beta(t, prev_t)
        posterior_variance = (1 - self._alpha_prod(prev_t)) / (1 - self._alpha_prod(t)) * beta
        if self.variance_type == "fixed_small_log":
            return torch.log(torch.clamp(posterior_variance, min=1e-20))
        frac = (predicted_variance + 1) / 2
        return frac * beta.log() + (1 - frac) * posterior_variance.log()

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        prev_timestep: int | torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> UnCLIPSchedulerOutput | tuple:
        """
        One ancestral step ``x_t -> x_prev``.

        Args:
            model_output: the model's prediction; with ``learned_range``, twice the sample's channels (the second
                half is the variance interpolation value in [-1, 1]).
            timestep: the current timestep ``t``.
            sample: ``x_t``.
            prev_timestep: the timestep to step to. Defaults to the next one of :meth:`set_timesteps` (or ``t - 1``
                when no schedule was set).
            generator: random generator(s) for the step noise.
            return_dict: return an :class:`UnCLIPSchedulerOutput` rather than a tuple.
        """
        t = int(timestep)
        prev_t = self.previous_timestep(t) if prev_timestep is None else int(prev_timestep)

        predicted_variance = None
        if model_output.shape[1] == sample.shape[1] * 2 and self.variance_type == "learned_range":
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
        elif self.variance_type == "learned_range" and t > 0:
            raise ValueError(
                "`variance_type='learned_range'` needs the model's variance channels: pass a model output with twice "
                f"the sample's channels ({2 * sample.shape[1]}), got {model_output.shape[1]}."
            )

        alpha_prod_t = self._alpha_prod(t)
        alpha_prod_prev = self._alpha_prod(prev_t)
        beta_prod_t = 1 - alpha_prod_t
        beta = self._step_beta(t, prev_t)
        alpha = self.alphas[t] if prev_t == t - 1 else 1 - beta

        if self.config.prediction_type == "epsilon":
            pred_original_sample = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
        else:
            pred_original_sample = model_output
        if self.config.clip_sample:
            limit = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-limit, limit)

        # posterior mean (DDPM eq. 7) with the respaced beta
        x0_coeff = alpha_prod_prev**0.5 * beta / beta_prod_t
        xt_coeff = alpha**0.5 * (1 - alpha_prod_prev) / beta_prod_t
        prev_sample = x0_coeff * pred_original_sample + xt_coeff * sample

        if t > 0:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            std = torch.exp(0.5 * self._log_variance(t, prev_t, predicted_variance))
            prev_sample = prev_sample + std * noise

        if not return_dict:
            return prev_sample, pred_original_sample
        return UnCLIPSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """The forward process ``q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)``, for training."""
        alphas_cumprod = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
        alpha_prod = alphas_cumprod[timesteps.to(original_samples.device).long()]
        alpha_prod = alpha_prod.reshape(-1, *([1] * (original_samples.ndim - 1)))
        return alpha_prod**0.5 * original_samples + (1 - alpha_prod) ** 0.5 * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps
