"""DALLE2-pytorch's DDIM samplers (``DiffusionPrior`` / ``Decoder.p_sample_loop_ddim``) as a diffusers scheduler."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .scheduling_unclip import _PREDICTION_TYPES, forward_process, keep_config_explicit, noise_schedule

_TABLES = ("alphas_cumprod", "alphas_cumprod_prev")
_SPACINGS = ("prior", "decoder")

#: the settings of DALLE2-pytorch's two DDIM samplers (the prior's eta is 1; the decoder's is its
#: ``ddim_sampling_eta``, 0 by default)
DALLE2_DDIM_VARIANTS = {
    "prior": {"timestep_spacing": "prior", "alphas_cumprod_table": "alphas_cumprod_prev", "eta": 1.0},
    "decoder": {"timestep_spacing": "decoder", "alphas_cumprod_table": "alphas_cumprod"},
}


@dataclass
class Dalle2DDIMSchedulerOutput(BaseOutput):
    """
    Args:
        prev_sample: the sample at the next timestep of the schedule (the clean sample after the last step).
        pred_original_sample: the model's (clipped) estimate of x_0, which self-conditioned networks read next step.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class Dalle2DDIMScheduler(SchedulerMixin, ConfigMixin):
    r"""
    The DDIM samplers of lucidrains' DALLE2-pytorch (1.15.6), which it runs whenever ``sample_timesteps`` is below the
    number of training steps. The two differ, and the config says which one to reproduce:

    - **prior** (``DiffusionPrior.p_sample_loop_ddim``): ``timestep_spacing="prior"``,
      ``alphas_cumprod_table="alphas_cumprod_prev"``, ``eta=1.0``. For ``N`` steps the timesteps are
      ``int(linspace(-1, T, N + 1)[:-1])`` reversed, so the network runs ``N - 1`` times and the last step (to -1)
      returns the clipped x_0 estimate itself;
    - **decoder** (``Decoder.p_sample_loop_ddim``): ``timestep_spacing="decoder"``,
      ``alphas_cumprod_table="alphas_cumprod"``, ``eta`` = the decoder's ``ddim_sampling_eta`` (default 0). The
      timesteps are ``int(linspace(0, T, N + 2)[:-1])`` reversed (repeats dropped), ``N`` network runs, and the last
      step goes to timestep 0 (not to the clean sample).

    In both, x_0 and the implied noise come from ``alphas_cumprod[t]`` and the prediction type, x_0 is clamped as
    configured, and a step from ``t`` to ``s`` is ``x_s = sqrt(a_s) x_0 + c1 ε + c2 ε̂`` with ``a`` read from
    ``alphas_cumprod_table``, ``c1 = eta · sqrt((1 - a_t / a_s)(1 - a_s) / (1 - a_t))`` and
    ``c2 = sqrt(1 - a_s - c1²)``. Fresh noise ε is drawn whenever ``s > 0`` — also at ``eta = 0``, where it is
    multiplied by 0, because DALLE2-pytorch draws it too: seeded runs then consume the same random numbers.

    With all ``T`` steps DALLE2-pytorch samples with its DDPM sampler instead, which is
    :class:`~unclip_pipelines.UnCLIPScheduler` (same config keys: ``UnCLIPScheduler.from_config(this.config)``);
    :meth:`set_timesteps` therefore takes fewer than ``T`` steps.

    Parameters:
        num_train_timesteps, beta_schedule, beta_start, beta_end: the noise schedule, exactly as in
            :class:`~unclip_pipelines.UnCLIPScheduler` (whose computation this scheduler uses).
        prediction_type: ``"epsilon"``, ``"sample"`` (x_0) or ``"v_prediction"``.
        clip_sample, clip_sample_range: clamp the x_0 estimate to ``±clip_sample_range`` (DALLE2-pytorch: the decoder
            always, ±1; the prior only without ``predict_x_start``).
        eta: the DDIM stochasticity in [0, 1].
        alphas_cumprod_table: ``"alphas_cumprod"`` (ᾱ_t) or ``"alphas_cumprod_prev"`` (ᾱ_{t-1}, with 1 at t = 0): the
            table the update's ``a_t`` / ``a_s`` are read from.
        timestep_spacing: ``"prior"`` or ``"decoder"``, the time grids above.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: Literal["squaredcos_cap_v2", "linear", "quadratic", "sigmoid", "jsd"] = "squaredcos_cap_v2",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        eta: float = 0.0,
        alphas_cumprod_table: Literal["alphas_cumprod", "alphas_cumprod_prev"] = "alphas_cumprod",
        timestep_spacing: Literal["prior", "decoder"] = "decoder",
    ) -> None:
        if not isinstance(num_train_timesteps, numbers.Integral) or isinstance(num_train_timesteps, bool):
            raise TypeError(f"`num_train_timesteps` must be an int, got {type(num_train_timesteps).__name__}.")
        if num_train_timesteps < 2:
            raise ValueError(f"`num_train_timesteps` must be at least 2 for DDIM, got {num_train_timesteps}.")
        if prediction_type not in _PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {_PREDICTION_TYPES}, got {prediction_type!r}.")
        if alphas_cumprod_table not in _TABLES:
            raise ValueError(
                f"`alphas_cumprod_table` must be one of {_TABLES} (DALLE2-pytorch's decoder reads 'alphas_cumprod', "
                f"its prior 'alphas_cumprod_prev'), got {alphas_cumprod_table!r}."
            )
        if timestep_spacing not in _SPACINGS:
            raise ValueError(
                f"`timestep_spacing` must be 'prior' (DiffusionPrior's DDIM grid) or 'decoder' (Decoder's), got "
                f"{timestep_spacing!r}."
            )
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0 <= eta <= 1:
            raise ValueError(f"`eta` must be a number in [0, 1] (0: deterministic DDIM), got {eta!r}.")
        keep_config_explicit(self)

        self.betas, self.alphas_cumprod = noise_schedule(beta_schedule, num_train_timesteps, beta_start, beta_end)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod_prev = F.pad(self.alphas_cumprod[:-1], (1, 0), value=1.0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(num_train_timesteps)[::-1].copy())
        self._next_timestep: dict[int, int] = {}

    @property
    def step_alphas_cumprod(self) -> torch.Tensor:
        """The table the DDIM update reads (``alphas_cumprod`` or ``alphas_cumprod_prev``, by the config)."""
        return getattr(self, self.config.alphas_cumprod_table)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """Identity; present so the scheduler is interchangeable with those that scale the model input."""
        return sample

    def min_inference_steps(self) -> int:
        """The prior's grid needs 2 steps for one network call; the decoder's needs 1."""
        return 2 if self.config.timestep_spacing == "prior" else 1

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """
        DALLE2-pytorch's DDIM grid for ``num_inference_steps`` (its ``sample_timesteps``). The prior's grid has one
        timestep fewer than ``num_inference_steps`` (its last step, to -1, is part of the last network call).
        """
        total = self.config.num_train_timesteps
        if not isinstance(num_inference_steps, (int, np.integer)) or isinstance(num_inference_steps, bool):
            raise TypeError(f"`num_inference_steps` must be an int, got {type(num_inference_steps).__name__}.")
        low = self.min_inference_steps()
        if num_inference_steps >= total:
            raise ValueError(
                f"`num_inference_steps` must be below num_train_timesteps={total} for DALLE2-pytorch's DDIM sampler, "
                f"got {num_inference_steps}. With all {total} steps DALLE2-pytorch samples with its DDPM sampler: "
                "use UnCLIPScheduler.from_config(scheduler.config) for that."
            )
        if num_inference_steps < low:
            raise ValueError(
                f"`num_inference_steps` must be at least {low} with timestep_spacing="
                f"{self.config.timestep_spacing!r}, got {num_inference_steps}"
                + (" (the prior's DDIM grid calls the network num_inference_steps - 1 times)." if low == 2 else ".")
            )
        if self.config.timestep_spacing == "prior":
            grid = torch.linspace(-1.0, total, steps=num_inference_steps + 1, dtype=torch.float32)[:-1]
        else:
            grid = torch.linspace(0.0, total, steps=num_inference_steps + 2, dtype=torch.float32)[:-1]
        times = list(reversed(grid.int().tolist()))
        pairs = [(t, s) for t, s in zip(times[:-1], times[1:]) if t > s]
        if self.config.prediction_type == "epsilon":
            for t, _ in pairs:
                if float(self.alphas_cumprod[t]) == 0:
                    raise ValueError(
                        f"`prediction_type='epsilon'` cannot recover x_0 at timestep {t}: the "
                        f"{self.config.beta_schedule!r} schedule has ᾱ_{t} = 0 there (its beta reaches 1). Sample "
                        "with fewer steps, or use a 'v_prediction' or 'sample' model."
                    )
        self.num_inference_steps = int(num_inference_steps)
        self._next_timestep = dict(pairs)
        self.timesteps = torch.tensor([t for t, _ in pairs], dtype=torch.int64, device=device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The timestep that ``step`` moves ``timestep`` to (-1: the clean sample of the prior's last step)."""
        if self.num_inference_steps is None:
            raise ValueError("Call `set_timesteps(num_inference_steps)` before `step`.")
        t = int(timestep)
        if t not in self._next_timestep:
            raise ValueError(
                f"timestep {t} is not one of this schedule's timesteps {self.timesteps.tolist()} (set by "
                f"set_timesteps({self.num_inference_steps}))."
            )
        return self._next_timestep[t]

    def _predicted_original_sample(self, model_output, sample, alpha_prod):
        kind = self.config.prediction_type
        if kind == "epsilon":  # DALLE2-pytorch's predict_start_from_noise
            return (1 / alpha_prod) ** 0.5 * sample - (1 / alpha_prod - 1) ** 0.5 * model_output
        if kind == "v_prediction":
            return alpha_prod**0.5 * sample - (1 - alpha_prod) ** 0.5 * model_output
        return model_output

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> Dalle2DDIMSchedulerOutput | tuple:
        """
        One DDIM step of DALLE2-pytorch from ``timestep`` to the next timestep of :meth:`set_timesteps`.

        Args:
            model_output: the (guided) network output, with the sample's channels (drop learned-variance channels
                first: DALLE2-pytorch's DDIM ignores them).
            timestep: the current timestep, one of ``self.timesteps``.
            sample: ``x_t``.
            generator: random generator(s) for the step noise.
            return_dict: return a :class:`Dalle2DDIMSchedulerOutput` rather than a tuple.
        """
        if model_output.shape != sample.shape:
            raise ValueError(
                f"`model_output` has shape {tuple(model_output.shape)} but `sample` has {tuple(sample.shape)}: pass only "
                "the prediction channels (DALLE2-pytorch's DDIM ignores a learned variance)."
            )
        t = int(timestep)
        s = self.previous_timestep(t)
        dtype, device = sample.dtype, sample.device
        alpha_prod = self.alphas_cumprod[t].to(device=device, dtype=dtype)
        x0 = self._predicted_original_sample(model_output, sample, alpha_prod)
        if self.config.clip_sample:
            limit = self.config.clip_sample_range
            x0 = x0.clamp(-limit, limit)
        if s < 0:  # the prior's last step returns its x_0 estimate
            prev_sample = x0
        else:
            # the noise the (clipped) x_0 implies; this form stays finite where ᾱ_t = 0
            pred_noise = (sample - alpha_prod**0.5 * x0) / (1 - alpha_prod) ** 0.5
            table = self.step_alphas_cumprod
            a_t, a_s = (table[i].to(device=device, dtype=dtype) for i in (t, s))
            c1 = self.config.eta * ((1 - a_t / a_s) * (1 - a_s) / (1 - a_t)).clamp(min=0) ** 0.5
            c2 = ((1 - a_s) - c1**2).clamp(min=0) ** 0.5
            noise = 0.0
            if s > 0:
                noise = randn_tensor(sample.shape, generator=generator, device=device, dtype=dtype)
            prev_sample = x0 * a_s**0.5 + c1 * noise + c2 * pred_noise  # DALLE2-pytorch's order of operations
        if not return_dict:
            return prev_sample, x0
        return Dalle2DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """The forward process ``q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)``."""
        return forward_process(self.alphas_cumprod, original_samples, noise, timesteps)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
