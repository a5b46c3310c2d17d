"""Dalle2DDIMScheduler on its own: grids, step arithmetic, noise draws, errors and the config round trip (its parity
with DALLE2-pytorch's samplers is in tests/conversion/test_dalle2_sampling.py)."""

import pytest
import torch

from unclip_pipelines import Dalle2DDIMScheduler, Dalle2DDIMSchedulerOutput, UnCLIPScheduler

PRIOR = dict(timestep_spacing="prior", alphas_cumprod_table="alphas_cumprod_prev", eta=1.0, prediction_type="sample",
             clip_sample=False)
DECODER = dict(timestep_spacing="decoder", alphas_cumprod_table="alphas_cumprod", eta=0.0)


def test_grids_follow_dalle2_pytorch():
    # prior: int(linspace(-1, 20, 6)[:-1]) = [-1, 3, 7, 11, 15] reversed, the last step goes to -1
    prior = Dalle2DDIMScheduler(num_train_timesteps=20, **PRIOR)
    prior.set_timesteps(5)
    assert prior.timesteps.tolist() == [15, 11, 7, 3]
    assert [prior.previous_timestep(t) for t in prior.timesteps] == [11, 7, 3, -1]
    # decoder: int(linspace(0, 20, 7)[:-1]) = [0, 3, 6, 10, 13, 16] reversed, the last step goes to 0
    decoder = Dalle2DDIMScheduler(num_train_timesteps=20, **DECODER)
    decoder.set_timesteps(5)
    assert decoder.timesteps.tolist() == [16, 13, 10, 6, 3]
    assert decoder.previous_timestep(3) == 0
    decoder.set_timesteps(19)  # the largest DDIM grid: 19 steps from 19
    assert decoder.timesteps.tolist() == list(range(19, 0, -1))
    assert len(Dalle2DDIMScheduler()) == 1000


@pytest.mark.parametrize("config", [PRIOR, DECODER])
def test_shapes_and_outputs(config):
    scheduler = Dalle2DDIMScheduler(num_train_timesteps=50, **config)
    scheduler.set_timesteps(6)
    shape = (2, 3, 4, 4) if config is DECODER else (2, 8)
    sample = torch.randn(shape)
    for t in scheduler.timesteps:
        out = scheduler.step(torch.randn(shape), t, sample, generator=torch.Generator().manual_seed(int(t)))
        assert isinstance(out, Dalle2DDIMSchedulerOutput)
        assert out.prev_sample.shape == shape and out.pred_original_sample.shape == shape
        sample = out.prev_sample
    prev, x0 = scheduler.step(torch.randn(shape), scheduler.timesteps[0], sample, return_dict=False)
    assert prev.shape == x0.shape == shape
    assert scheduler.scale_model_input(sample, 3) is sample


def test_prior_last_step_returns_x0_and_decoder_last_step_does_not():
    prior = Dalle2DDIMScheduler(num_train_timesteps=20, **PRIOR)
    prior.set_timesteps(5)
    x0 = torch.randn(1, 8)
    assert torch.equal(prior.step(x0, 3, torch.randn(1, 8)).prev_sample, x0)
    decoder = Dalle2DDIMScheduler(num_train_timesteps=20, **DECODER)
    decoder.set_timesteps(5)
    sample, eps = torch.randn(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    out = decoder.step(eps, 3, sample)
    # to timestep 0: sqrt(ᾱ_0) x0 plus the noise x0 implies (eps = 0 and eta = 0: only the x0 part)
    a0, a3 = decoder.alphas_cumprod[0], decoder.alphas_cumprod[3]
    x0 = (sample / a3**0.5).clamp(-1, 1)
    expected = x0 * a0**0.5 + (1 - a0) ** 0.5 * (sample - a3**0.5 * x0) / (1 - a3) ** 0.5
    assert torch.allclose(out.prev_sample, expected, atol=1e-6)


def test_noise_is_drawn_when_the_next_timestep_is_positive_even_at_eta_zero():
    """DALLE2-pytorch draws the step noise also at eta 0, so a seeded run consumes the same random numbers."""
    scheduler = Dalle2DDIMScheduler(num_train_timesteps=20, **DECODER)
    scheduler.set_timesteps(5)
    sample, output = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    for t, draws in ((16, 1), (3, 0)):  # 16 -> 13 draws, 3 -> 0 does not
        generator = torch.Generator().manual_seed(0)
        scheduler.step(output, t, sample, generator=generator)
        reference = torch.Generator().manual_seed(0)
        for _ in range(draws):
            torch.randn(sample.shape, generator=reference)
        assert torch.equal(generator.get_state(), reference.get_state()), t
    # ... and with eta = 0 the noise does not change the result
    a = scheduler.step(output, 16, sample, generator=torch.Generator().manual_seed(1)).prev_sample
    b = scheduler.step(output, 16, sample, generator=torch.Generator().manual_seed(2)).prev_sample
    assert torch.equal(a, b)


def test_eta_and_table_change_the_step():
    sample, output = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    results = {}
    for name, extra in {"eta0": {}, "eta1": {"eta": 1.0}, "prev": {"alphas_cumprod_table": "alphas_cumprod_prev"}}.items():
        scheduler = Dalle2DDIMScheduler(num_train_timesteps=20, **{**DECODER, **extra})
        scheduler.set_timesteps(5)
        results[name] = scheduler.step(output, 16, sample, generator=torch.Generator().manual_seed(0)).prev_sample
    assert not torch.allclose(results["eta0"], results["eta1"]) and not torch.allclose(results["eta0"], results["prev"])


@pytest.mark.parametrize(
    "config, steps, error, message",
    [
        (DECODER, 20, ValueError, "below num_train_timesteps=20.*UnCLIPScheduler"),
        (DECODER, 0, ValueError, "at least 1"),
        (PRIOR, 1, ValueError, "at least 2 with timestep_spacing='prior'"),
        (DECODER, 2.5, TypeError, "must be an int"),
        (DECODER, True, TypeError, "must be an int"),
    ],
)
def test_set_timesteps_refuses_bad_step_counts(config, steps, error, message):
    scheduler = Dalle2DDIMScheduler(num_train_timesteps=20, **config)
    with pytest.raises(error, match=message):
        scheduler.set_timesteps(steps)


def test_step_errors():
    scheduler = Dalle2DDIMScheduler(num_train_timesteps=20, **DECODER)
    sample = torch.randn(1, 3, 2, 2)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(sample, 16, sample)
    scheduler.set_timesteps(5)
    with pytest.raises(ValueError, match="timestep 15 is not one of"):
        scheduler.step(sample, 15, sample)
    with pytest.raises(ValueError, match="ignores a learned variance"):
        scheduler.step(torch.randn(1, 6, 2, 2), 16, sample)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alphas_cumprod_table": "betas"}, "alphas_cumprod_table"),
        ({"timestep_spacing": "linspace"}, "timestep_spacing"),
        ({"eta": 1.5}, "eta"),
        ({"prediction_type": "x0"}, "prediction_type"),
        ({"beta_schedule": "cosine"}, "beta_schedule"),
        ({"num_train_timesteps": 1}, "at least 2"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Dalle2DDIMScheduler(**kwargs)


def test_epsilon_at_a_pure_noise_timestep_is_refused():
    # jsd: ᾱ_{T-1} = 0, reached by the decoder's grid with T - 1 steps
    scheduler = Dalle2DDIMScheduler(num_train_timesteps=20, beta_schedule="jsd", **DECODER)
    with pytest.raises(ValueError, match="ᾱ_19 = 0"):
        scheduler.set_timesteps(19)
    scheduler.set_timesteps(10)  # stays below 19


def test_save_pretrained_round_trip_and_shared_schedule(tmp_path):
    scheduler = Dalle2DDIMScheduler(num_train_timesteps=30, beta_schedule="sigmoid", beta_start=0.003, beta_end=0.6,
                                    **PRIOR)
    scheduler.save_pretrained(tmp_path)
    loaded = Dalle2DDIMScheduler.from_pretrained(tmp_path)
    assert dict(loaded.config) == dict(scheduler.config)
    assert torch.equal(loaded.alphas_cumprod_prev, scheduler.alphas_cumprod_prev)
    # the noise schedule is UnCLIPScheduler's, and the config converts both ways
    unclip = UnCLIPScheduler.from_config(loaded.config)
    assert torch.equal(unclip.alphas_cumprod, loaded.alphas_cumprod) and unclip.config.prediction_type == "sample"
    back = Dalle2DDIMScheduler.from_config(unclip.config, **PRIOR)
    assert torch.equal(back.alphas_cumprod, loaded.alphas_cumprod) and back.config.eta == 1.0
    assert torch.equal(loaded.alphas_cumprod_prev[1:], loaded.alphas_cumprod[:-1]) and loaded.alphas_cumprod_prev[0] == 1
