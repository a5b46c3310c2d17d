import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers import UnCLIPScheduler as DeprecatedUnCLIPScheduler

from unclip_pipelines import UnCLIPScheduler

KARLO_CONFIGS = [
    dict(variance_type="fixed_small_log", prediction_type="sample", clip_sample_range=5.0),
    dict(variance_type="learned_range", prediction_type="epsilon", clip_sample_range=1.0),
    dict(variance_type="fixed_small_log", prediction_type="epsilon", clip_sample_range=1.0),
]


def test_karlo_timesteps():
    scheduler = UnCLIPScheduler()
    scheduler.set_timesteps(25)
    assert scheduler.timesteps[:3].tolist() == [999, 957, 916]
    assert scheduler.timesteps[-3:].tolist() == [83, 42, 0]
    scheduler.set_timesteps(7)
    assert scheduler.timesteps.tolist() == [999, 832, 666, 500, 333, 166, 0]


def test_variance_matches_reference_values():
    # values of diffusers' scheduler test suite for UnCLIPScheduler's fixed_small_log variance
    scheduler = UnCLIPScheduler(variance_type="fixed_small_log")
    std = lambda t: torch.exp(0.5 * scheduler._log_variance(t, t - 1, None))  # noqa: E731
    assert torch.allclose(std(0), torch.tensor(1.0e-10), atol=1e-12)
    assert torch.allclose(std(487), torch.tensor(0.0549625), atol=1e-5)
    assert torch.allclose(std(999), torch.tensor(0.9994987), atol=1e-5)


@pytest.mark.parametrize("config", KARLO_CONFIGS)
@pytest.mark.parametrize("steps", [25, 7, 1000])
def test_step_matches_deprecated_scheduler(config, steps):
    ours, theirs = UnCLIPScheduler(**config), DeprecatedUnCLIPScheduler(**config)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    channels = 6 if config["variance_type"] == "learned_range" else 3
    sample = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = b = sample
    timesteps = ours.timesteps.tolist()
    for i, t in enumerate(timesteps[:30] + timesteps[-3:] if steps == 1000 else timesteps):
        index = timesteps.index(t)
        prev = timesteps[index + 1] if index + 1 < len(timesteps) else None
        output = torch.randn(2, channels, 8, 8, generator=torch.Generator().manual_seed(i)).clamp(-1, 1)
        a = ours.step(output, t, a, generator=torch.Generator().manual_seed(100 + i)).prev_sample
        b = theirs.step(output, t, b, prev_timestep=prev, generator=torch.Generator().manual_seed(100 + i)).prev_sample
        assert torch.equal(a, b), f"step {i} (t={t}) differs"


def test_explicit_prev_timestep_is_accepted():
    scheduler = UnCLIPScheduler()
    scheduler.set_timesteps(10)
    sample, output = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    t = scheduler.timesteps[0]
    implicit = scheduler.step(output, t, sample, generator=torch.Generator().manual_seed(0)).prev_sample
    explicit = scheduler.step(
        output, t, sample, prev_timestep=scheduler.timesteps[1], generator=torch.Generator().manual_seed(0)
    ).prev_sample
    other = scheduler.step(output, t, sample, prev_timestep=500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(implicit, explicit)
    assert not torch.equal(implicit, other.prev_sample)


def test_single_step_schedule_samples_in_one_step():
    # diffusers' deprecated scheduler divides by zero here (huggingface/diffusers#14586)
    scheduler = UnCLIPScheduler(prediction_type="sample")
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [999]
    x0 = torch.full((1, 4), 0.5)
    out = scheduler.step(x0, 999, torch.randn(1, 4)).prev_sample
    assert torch.allclose(out, x0, atol=1e-3)


@pytest.mark.parametrize("bad", [0, -3, 1001])
def test_bad_step_counts_raise(bad):
    with pytest.raises(ValueError, match="num_inference_steps"):
        UnCLIPScheduler().set_timesteps(bad)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="beta_schedule"):
        UnCLIPScheduler(beta_schedule="scaled_linear")
    with pytest.raises(ValueError, match="variance_type"):
        UnCLIPScheduler(variance_type="fixed_large")


def test_learned_range_without_variance_channels_raises():
    scheduler = UnCLIPScheduler(variance_type="learned_range")
    scheduler.set_timesteps(5)
    with pytest.raises(ValueError, match="variance"):
        scheduler.step(torch.randn(1, 3, 4, 4), scheduler.timesteps[0], torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("cls", [DPMSolverMultistepScheduler, DDIMScheduler, EulerDiscreteScheduler])
def test_other_schedulers_keep_the_cosine_schedule(cls):
    # a Karlo config does not name its beta schedule; from_config must not fall back to `linear`
    karlo = UnCLIPScheduler.from_config({"variance_type": "fixed_small_log", "prediction_type": "sample"})
    other = cls.from_config(karlo.config)
    assert other.config.beta_schedule == "squaredcos_cap_v2"
    assert other.config.prediction_type == "sample"
    assert torch.allclose(other.alphas_cumprod, karlo.alphas_cumprod)


def test_add_noise_forward_process():
    scheduler = UnCLIPScheduler()
    x0, noise = torch.ones(2, 3), torch.zeros(2, 3)
    noisy = scheduler.add_noise(x0, noise, torch.tensor([0, 999]))
    assert torch.allclose(noisy[0], scheduler.alphas_cumprod[0].sqrt() * x0[0])
    assert noisy[1].abs().max() < 0.05
