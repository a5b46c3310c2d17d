"""unCLIP's ancestral sampler: DDPM with respaced betas, reading Karlo's scheduler configs."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

_BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "quadratic", "sigmoid", "jsd")
#: schedules whose betas are spanned by ``beta_start`` / ``beta_end``
_RANGED_SCHEDULES = ("linear", "quadratic", "sigmoid")
_VARIANCE_TYPES = ("fixed_small_log", "learned_range")
_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


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
        prediction_type: ``"epsilon"`` (noise), ``"sample"`` (x_0, as the diffusion prior predicts) or
            ``"v_prediction"`` (``v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x_0``, Salimans & Ho 2022).
        beta_schedule: ``"squaredcos_cap_v2"`` (the cosine schedule of unCLIP), ``"linear"``, or one of the other
            schedules of DALLE2-pytorch's ``NoiseScheduler``, computed as it does (in float64, then cast to float32;
            ``jsd`` in float32), cumulative alphas included:

            - ``"quadratic"``: the squares of ``T`` evenly spaced values from ``sqrt(beta_start)`` to
              ``sqrt(beta_end)``;
            - ``"sigmoid"``: ``beta_start + (beta_end - beta_start) · sigmoid(s)`` for ``T`` evenly spaced ``s`` in
              [-6, 6];
            - ``"jsd"``: ``beta_t = 1 / (T - t)`` (its last beta is 1, so ``ᾱ_{T-1} = 0``: ``epsilon`` models cannot
              be sampled from it, and :meth:`step` says so).

            Of diffusers' schedulers only ``DDPMScheduler`` knows one of them (its own float32 ``"sigmoid"``);
            ``from_config`` into the others raises ``NotImplementedError``.
        beta_start, beta_end: the range of the ``linear``, ``quadratic`` and ``sigmoid`` schedules (DALLE2-pytorch's
            are ``1000 / T`` times 0.0001 and 0.02); their betas must lie in [0, 1].
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        variance_type: Literal["fixed_small_log", "learned_range"] = "fixed_small_log",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        beta_schedule: Literal["squaredcos_cap_v2", "linear", "quadratic", "sigmoid", "jsd"] = "squaredcos_cap_v2",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
    ) -> None:
        if beta_schedule not in _BETA_SCHEDULES:
            raise ValueError(f"`beta_schedule` must be one of {_BETA_SCHEDULES}, got {beta_schedule!r}.")
        if variance_type not in _VARIANCE_TYPES:
            raise ValueError(f"`variance_type` must be one of {_VARIANCE_TYPES}, got {variance_type!r}.")
        if prediction_type not in _PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {_PREDICTION_TYPES}, got {prediction_type!r}.")
        if not isinstance(num_train_timesteps, numbers.Integral) or isinstance(num_train_timesteps, bool):
            raise TypeError(f"`num_train_timesteps` must be an int, got {type(num_train_timesteps).__name__}.")
        if num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be at least 1, got {num_train_timesteps}.")
        keep_config_explicit(self)

        self.betas, self.alphas_cumprod = noise_schedule(beta_schedule, num_train_timesteps, beta_start, beta_end)
        self.alphas = 1.0 - self.betas
        # timesteps where x_t is pure noise (ᾱ = 0: jsd's last step); found once, not at every sampling step
        self._pure_noise_timesteps = frozenset(torch.nonzero(self.alphas_cumprod == 0).flatten().tolist())
        self.one = torch.tensor(1.0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(num_train_timesteps)[::-1].copy())

    def _check_recoverable(self, t: int) -> None:
        """A noise prediction says nothing about x_0 where ᾱ_t = 0 (a schedule whose beta reaches 1)."""
        if self.config.prediction_type == "epsilon" and t in self._pure_noise_timesteps:
            raise ValueError(
                f"`prediction_type='epsilon'` cannot recover x_0 at timestep {t}: the {self.config.beta_schedule!r} "
                f"noise schedule has ᾱ_{t} = 0 (its beta reaches 1), so x_t is pure noise there. Such a schedule "
                "needs a 'v_prediction' or 'sample' model (DALLE2-pytorch's own sampler returns NaN here)."
            )

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
        return int(later.max()) if len(later) else -1

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
        eta: float | None = None,
    ) -> UnCLIPSchedulerOutput | tuple:
        """
        One step ``x_t -> x_prev``: ancestral (default), or DDIM with stochasticity ``eta`` when ``eta`` is given.

        Args:
            model_output: the model's prediction; with ``learned_range``, twice the sample's channels (the second
                half is the variance interpolation value in [-1, 1]).
            timestep: the current timestep ``t``.
            sample: ``x_t``.
            prev_timestep: the timestep to step to. Defaults to the next one of :meth:`set_timesteps` (or ``t - 1``
                when no schedule was set).
            generator: random generator(s) for the step noise.
            return_dict: return an :class:`UnCLIPSchedulerOutput` rather than a tuple.
            eta: ``None`` for Karlo's ancestral step; a number in [0, 1] for a DDIM step (Song et al. 2021, eq. 12)
                with ``σ = eta · sqrt((1 - ᾱ_prev) / (1 - ᾱ_t)) · sqrt(1 - ᾱ_t / ᾱ_prev)`` on the same timesteps and
                cumulative alphas; ``eta = 0`` is deterministic and is undone by :class:`UnCLIPInverseScheduler`.
        """
        t = int(timestep)
        prev_t = self.previous_timestep(t) if prev_timestep is None else int(prev_timestep)
        self._check_recoverable(t)
        if eta is not None:
            if not 0 <= eta <= 1:
                raise ValueError(f"`eta` must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}.")
            model_output = self._split_variance(model_output, sample)[0]
            prev_sample, pred_original_sample = self._ddim_update(model_output, sample, t, prev_t, eta, generator)
            if not return_dict:
                return prev_sample, pred_original_sample
            return UnCLIPSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

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

        pred_original_sample = self._predicted_original_sample(model_output, sample, alpha_prod_t)
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

    def _predicted_original_sample(
        self, model_output: torch.Tensor, sample: torch.Tensor, alpha_prod: torch.Tensor
    ) -> torch.Tensor:
        """x_0 from the model output, by ``prediction_type`` (before clipping)."""
        if self.config.prediction_type == "epsilon":
            return (sample - (1 - alpha_prod) ** 0.5 * model_output) / alpha_prod**0.5
        if self.config.prediction_type == "v_prediction":
            return alpha_prod**0.5 * sample - (1 - alpha_prod) ** 0.5 * model_output
        return model_output

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """The ``v_prediction`` training target ``sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0`` (diffusers' name for it)."""
        alphas_cumprod = self.alphas_cumprod.to(device=sample.device, dtype=sample.dtype)
        alpha_prod = alphas_cumprod[timesteps.to(sample.device).long()].reshape(-1, *([1] * (sample.ndim - 1)))
        return alpha_prod**0.5 * noise - (1 - alpha_prod) ** 0.5 * sample

    @staticmethod
    def _split_variance(model_output: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if sample.ndim == 4 and model_output.shape[1] == sample.shape[1] * 2:
            return tuple(torch.split(model_output, sample.shape[1], dim=1))
        return model_output, None

    def _ddim_update(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        from_t: int,
        to_t: int,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Move ``sample`` from ``from_t`` to ``to_t`` along DDIM's path (either direction; timestep -1 is the clean
        image, ᾱ = 1). As in guided-diffusion (and so GLIDE and Karlo), the noise is re-derived from the clipped x_0,
        so the deterministic update depends on the model only through x_0 and its inverse is the same formula.
        """
        alpha_from, alpha_to = self._alpha_prod(from_t), self._alpha_prod(to_t)
        alpha_from, alpha_to = (a.to(device=sample.device, dtype=sample.dtype) for a in (alpha_from, alpha_to))
        pred_original_sample = self._predicted_original_sample(model_output, sample, alpha_from)
        if self.config.prediction_type == "epsilon":
            pred_epsilon = model_output
        elif self.config.prediction_type == "v_prediction":
            pred_epsilon = alpha_from**0.5 * model_output + (1 - alpha_from) ** 0.5 * sample
        else:
            pred_epsilon = (sample - alpha_from**0.5 * model_output) / (1 - alpha_from).clamp(min=1e-20) ** 0.5
        if self.config.clip_sample:
            limit = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-limit, limit)
            if alpha_from < 1:
                pred_epsilon = (sample - alpha_from**0.5 * pred_original_sample) / (1 - alpha_from) ** 0.5

        std = 0.0
        if eta > 0 and to_t < from_t:
            std = eta * ((1 - alpha_to) / (1 - alpha_from) * (1 - alpha_from / alpha_to)).clamp(min=0) ** 0.5
        direction = (1 - alpha_to - std**2).clamp(min=0) ** 0.5 * pred_epsilon
        prev_sample = alpha_to**0.5 * pred_original_sample + direction
        if eta > 0 and to_t < from_t and to_t >= 0:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            prev_sample = prev_sample + std * noise
        return prev_sample, pred_original_sample

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """The forward process ``q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)``, for training."""
        return forward_process(self.alphas_cumprod, original_samples, noise, timesteps)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def forward_process(
    alphas_cumprod: torch.Tensor, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
) -> torch.Tensor:
    """``sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` for each row's timestep (``add_noise`` of the unCLIP schedulers)."""
    alphas_cumprod = alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
    alpha_prod = alphas_cumprod[timesteps.to(original_samples.device).long()]
    alpha_prod = alpha_prod.reshape(-1, *([1] * (original_samples.ndim - 1)))
    return alpha_prod**0.5 * original_samples + (1 - alpha_prod) ** 0.5 * noise


def keep_config_explicit(scheduler: ConfigMixin) -> None:
    """
    ConfigMixin lists arguments left at their defaults in ``_use_default_values``, and ``from_config`` of another
    scheduler class then drops them (DPMSolverMultistepScheduler would silently fall back to a linear beta schedule).
    The noise schedule, prediction type and clipping belong to the trained model, so every value travels with the
    config.
    """
    if "_use_default_values" in scheduler._internal_dict:
        internal = dict(scheduler._internal_dict)
        internal.pop("_use_default_values")
        scheduler._internal_dict = FrozenDict(internal)


def noise_schedule(
    beta_schedule: str, num_train_timesteps: int, beta_start: float = 0.0001, beta_end: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    ``(betas, alphas_cumprod)`` in float32 of one of :class:`UnCLIPScheduler`'s ``beta_schedule`` values (see its
    docstring; ``quadratic`` / ``sigmoid`` / ``jsd`` exactly as DALLE2-pytorch's ``NoiseScheduler`` buffers).
    """
    if beta_schedule not in _BETA_SCHEDULES:
        raise ValueError(f"`beta_schedule` must be one of {_BETA_SCHEDULES}, got {beta_schedule!r}.")
    if beta_schedule == "squaredcos_cap_v2":
        betas = betas_for_alpha_bar(num_train_timesteps)
        return betas, torch.cumprod(1.0 - betas, dim=0)
    if beta_schedule == "linear":
        _check_beta_range(beta_schedule, beta_start, beta_end)
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        _check_betas(beta_schedule, betas, beta_start, beta_end)
        return betas, torch.cumprod(1.0 - betas, dim=0)
    betas = _dalle2_betas(beta_schedule, int(num_train_timesteps), beta_start, beta_end)
    # as DALLE2-pytorch's NoiseScheduler: the cumulative product in the betas' own precision, then float32
    return betas.to(torch.float32), torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_beta_range(schedule: str, beta_start, beta_end) -> None:
    if not (_is_real(beta_start) and _is_real(beta_end)):
        raise ValueError(
            f"`beta_start` and `beta_end` of the {schedule!r} schedule must be finite numbers, got "
            f"{beta_start!r} and {beta_end!r}."
        )
    if schedule == "quadratic" and min(beta_start, beta_end) < 0:
        raise ValueError(
            f"The 'quadratic' schedule interpolates sqrt(beta_start) to sqrt(beta_end): both must be >= 0, got "
            f"{beta_start!r} and {beta_end!r}."
        )


def _check_betas(schedule: str, betas: torch.Tensor, beta_start, beta_end) -> None:
    low, high = float(betas.min()), float(betas.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"The {schedule!r} schedule with beta_start={beta_start!r}, beta_end={beta_end!r} gives betas in "
            f"[{low:.6g}, {high:.6g}]; betas must lie in [0, 1] (DALLE2-pytorch's 1000 / T scaling passes 1 for fewer "
            "than 20 training steps)."
        )


def _dalle2_betas(schedule: str, timesteps: int, beta_start, beta_end) -> torch.Tensor:
    """The quadratic / sigmoid (float64) and jsd (float32) betas of DALLE2-pytorch's ``NoiseScheduler``."""
    if schedule == "jsd":
        # beta_t = 1 / (T - t): 1/T, 1/(T-1), ..., 1/1, in float32 as DALLE2-pytorch has them
        return 1.0 / torch.arange(timesteps, 0, -1, dtype=torch.float32)
    _check_beta_range(schedule, beta_start, beta_end)
    if schedule == "quadratic":
        roots = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64)
        betas = roots**2
    else:  # sigmoid
        ramp = torch.sigmoid(torch.linspace(-6.0, 6.0, timesteps, dtype=torch.float64))
        betas = ramp * (beta_end - beta_start) + beta_start
    _check_betas(schedule, betas, beta_start, beta_end)
    return betas


class UnCLIPInverseScheduler(UnCLIPScheduler):
    r"""
    DDIM inversion (η = 0) on :class:`UnCLIPScheduler`'s timesteps and cumulative alphas: it runs the schedule of
    :meth:`UnCLIPScheduler.set_timesteps` backwards, from the clean image (timestep -1) up to ``T - 1``, so that
    ``UnCLIPScheduler.step(..., eta=0)`` with the same number of steps maps the result back to the image.

    Built from any stage's config (``UnCLIPInverseScheduler.from_config(pipe.decoder_scheduler.config)``). At step
    ``t`` the model is evaluated on the current sample (at the previous, less noisy timestep) with timestep ``t``,
    the usual DDIM-inversion approximation; :meth:`step` then moves the sample from the previous timestep to ``t``.
    diffusers' ``DDIMInverseScheduler`` cannot be used instead: it has no ``"linspace"`` spacing, the one Karlo's
    models sample with.
    """

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """The sampling timesteps of :class:`UnCLIPScheduler`, ascending."""
        super().set_timesteps(num_inference_steps, device=device)
        self.timesteps = self.timesteps.flip(0)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> UnCLIPSchedulerOutput | tuple:
        """
        One inversion step: ``sample`` is at the timestep before ``timestep`` in the sampling schedule (-1 for the
        clean image); returns it moved to ``timestep`` as ``prev_sample`` (diffusers' name for the step's output).
        """
        t = int(timestep)
        model_output = self._split_variance(model_output, sample)[0]
        self._check_recoverable(self.previous_timestep(t))
        next_sample, pred_original_sample = self._ddim_update(model_output, sample, self.previous_timestep(t), t)
        if not return_dict:
            return next_sample, pred_original_sample
        return UnCLIPSchedulerOutput(prev_sample=next_sample, pred_original_sample=pred_original_sample)
