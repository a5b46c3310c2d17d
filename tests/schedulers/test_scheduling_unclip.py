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


def test_get_velocity_matches_diffusers_ddpm():
    from diffusers import DDPMScheduler

    ours = UnCLIPScheduler(prediction_type="v_prediction")
    reference = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=generator), torch.randn(4, 3, 8, 8, generator=generator)
    timesteps = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(ours.get_velocity(x0, noise, timesteps), reference.get_velocity(x0, noise, timesteps))


@pytest.mark.parametrize("steps", [7, 25])
@pytest.mark.parametrize("eta", [None, 0.0, 1.0])
def test_v_prediction_steps_like_the_equivalent_noise_prediction(steps, eta):
    """A v output and the noise it implies give the same step (ancestral and DDIM), and x_0 is recovered."""
    v_scheduler = UnCLIPScheduler(prediction_type="v_prediction", clip_sample=False)
    eps_scheduler = UnCLIPScheduler(prediction_type="epsilon", clip_sample=False)
    for scheduler in (v_scheduler, eps_scheduler):
        scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 3, 8, 8, generator=generator), torch.randn(2, 3, 8, 8, generator=generator)
    extra = {} if eta is None else {"eta": eta}
    for t in v_scheduler.timesteps[:-1]:
        t_batch = torch.full((2,), int(t))
        sample = eps_scheduler.add_noise(x0, noise, t_batch)
        velocity = v_scheduler.get_velocity(x0, noise, t_batch)
        out_v = v_scheduler.step(velocity, t, sample, generator=torch.Generator().manual_seed(2), **extra)
        out_eps = eps_scheduler.step(noise, t, sample, generator=torch.Generator().manual_seed(2), **extra)
        torch.testing.assert_close(out_v.pred_original_sample, x0, atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(out_v.prev_sample, out_eps.prev_sample, atol=2e-3, rtol=1e-3)


def test_v_prediction_is_a_known_prediction_type_and_others_are_refused():
    assert UnCLIPScheduler(prediction_type="v_prediction").config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="v_prediction"):
        UnCLIPScheduler(prediction_type="velocity")


# ---------------------------------------------------------------------------------------------------------------------
# DALLE2-pytorch's quadratic / sigmoid / jsd schedules


def _dalle2_noise_scheduler(schedule, timesteps):
    # not a bare pytest.importorskip("dalle2_pytorch"): without torchvision that import fails and would skip silently;
    # the helper imports it beside a CPU-only torch (see tests/conversion/dalle2_source.py)
    from tests.conversion.dalle2_source import import_dalle2_pytorch

    try:
        import_dalle2_pytorch()
    except ImportError as error:  # the dalle2-pytorch test extra is not installed
        pytest.skip(f"dalle2_pytorch not importable ({error})")
    from dalle2_pytorch.dalle2_pytorch import NoiseScheduler

    return NoiseScheduler(beta_schedule=schedule, timesteps=timesteps, loss_type="l2")


def _dalle2_config(schedule, timesteps, **extra):
    scale = 1000 / timesteps  # DALLE2-pytorch's 1000 / T scaling of the ranged schedules
    return dict(
        num_train_timesteps=timesteps, beta_schedule=schedule, beta_start=scale * 0.0001, beta_end=scale * 0.02, **extra
    )


@pytest.mark.parametrize("schedule", ["quadratic", "sigmoid", "jsd"])
@pytest.mark.parametrize("timesteps", [20, 37, 1000])
def test_dalle2_schedules_equal_dalle2_pytorch(schedule, timesteps):
    reference = _dalle2_noise_scheduler(schedule, timesteps)
    ours = UnCLIPScheduler(**_dalle2_config(schedule, timesteps))
    assert ours.betas.dtype == ours.alphas_cumprod.dtype == torch.float32
    assert torch.equal(ours.betas, reference.betas)
    assert torch.equal(ours.alphas_cumprod, reference.alphas_cumprod)


def test_dalle2_schedules_shape():
    quadratic = UnCLIPScheduler(beta_schedule="quadratic", beta_start=0.0001, beta_end=0.02)
    assert quadratic.betas[0].item() == pytest.approx(0.0001) and quadratic.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(quadratic.betas.sqrt().diff(), quadratic.betas.sqrt().diff()[0], atol=1e-7)
    sigmoid = UnCLIPScheduler(beta_schedule="sigmoid", beta_start=0.0001, beta_end=0.02)
    assert torch.allclose(sigmoid.betas, 0.0001 + 0.0199 * torch.sigmoid(torch.linspace(-6, 6, 1000)), atol=1e-8)
    jsd = UnCLIPScheduler(num_train_timesteps=4, beta_schedule="jsd")
    assert torch.equal(jsd.betas, torch.tensor([1 / 4, 1 / 3, 1 / 2, 1.0])) and jsd.alphas_cumprod[-1] == 0
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler.from_config(sigmoid.config)  # the one diffusers scheduler with a (float32) sigmoid schedule
    assert torch.allclose(ddpm.betas, sigmoid.betas, atol=1e-7)
    for name in ("quadratic", "sigmoid", "jsd"):
        with pytest.raises(NotImplementedError, match=name):
            DPMSolverMultistepScheduler.from_config(UnCLIPScheduler(**_dalle2_config(name, 50)).config)


@pytest.mark.parametrize("schedule", ["quadratic", "sigmoid", "jsd"])
def test_dalle2_schedules_keep_an_explicit_config(schedule, tmp_path):
    scheduler = UnCLIPScheduler(**_dalle2_config(schedule, 50, prediction_type="v_prediction"))
    scheduler.save_pretrained(tmp_path)
    loaded = UnCLIPScheduler.from_pretrained(tmp_path)
    assert loaded.config.beta_schedule == schedule and loaded.config.prediction_type == "v_prediction"
    assert (loaded.config.beta_start, loaded.config.beta_end) == (20 * 0.0001, 20 * 0.02)
    assert torch.equal(loaded.betas, scheduler.betas) and torch.equal(loaded.alphas_cumprod, scheduler.alphas_cumprod)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(beta_schedule="cubic"), "beta_schedule"),
        (dict(beta_schedule="quadratic", beta_start=-0.1), r"sqrt\(beta_start\).*>= 0"),
        (dict(beta_schedule="quadratic", beta_end=float("nan")), "finite numbers"),
        (dict(beta_schedule="sigmoid", beta_start="0.1"), "finite numbers"),
        (dict(beta_schedule="sigmoid", beta_end=1.5), r"betas must lie in \[0, 1\]"),
        (_dalle2_config("quadratic", 10), r"betas in \[0.01, 2\].*fewer than 20"),
        (_dalle2_config("linear", 10), r"betas must lie in \[0, 1\]"),
        (dict(beta_schedule="jsd", num_train_timesteps=0), "at least 1"),
    ],
)
def test_bad_dalle2_schedule_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UnCLIPScheduler(**kwargs)


def test_bad_num_train_timesteps_type_raises():
    with pytest.raises(TypeError, match="num_train_timesteps"):
        UnCLIPScheduler(beta_schedule="jsd", num_train_timesteps=20.0)


@pytest.mark.parametrize("eta", [None, 0.0])
def test_noise_prediction_where_alpha_bar_is_zero_raises(eta):
    """jsd's (and a 20-step linear / quadratic schedule's) last beta is 1: no x_0 from a noise prediction there."""
    extra = {} if eta is None else {"eta": eta}
    for config in (dict(num_train_timesteps=20, beta_schedule="jsd"), _dalle2_config("quadratic", 20)):
        scheduler = UnCLIPScheduler(**config)
        scheduler.set_timesteps(5)
        sample = torch.randn(1, 3, 4, 4)
        with pytest.raises(ValueError, match=r"cannot recover x_0 at timestep 19.*v_prediction"):
            scheduler.step(torch.randn(1, 3, 4, 4), scheduler.timesteps[0], sample, **extra)
        scheduler.step(torch.randn(1, 3, 4, 4), scheduler.timesteps[1], sample, **extra)  # ᾱ > 0 from there on
        v_scheduler = UnCLIPScheduler(**config, prediction_type="v_prediction")
        v_scheduler.set_timesteps(5)
        out = v_scheduler.step(torch.ones(1, 3, 4, 4) * 0.5, 19, sample, **extra)
        assert torch.equal(out.pred_original_sample, torch.full((1, 3, 4, 4), -0.5))  # x_0 = -v where ᾱ = 0
        assert torch.isfinite(out.prev_sample).all()
