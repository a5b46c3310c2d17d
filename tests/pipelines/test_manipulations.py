"""Manipulation math (slerp, text diff, PCA, best-of-N), DDIM η and inversion in the scheduler, CLIP re-ranking."""

import copy
import math

import numpy as np
import pytest
import torch

from tests.helpers import FEW_STEPS, seeded
from unclip_pipelines import (
    UnCLIPInverseScheduler,
    UnCLIPPCA,
    UnCLIPPipeline,
    UnCLIPPriorPipeline,
    UnCLIPScheduler,
    normalize,
    slerp,
)
from unclip_pipelines.manipulations import best_of_candidates, text_diff_direction

# --- slerp ---------------------------------------------------------------------------------------------------------


def test_slerp_endpoints_are_exact():
    a, b = torch.randn(3, 32, generator=seeded(0)), torch.randn(3, 32, generator=seeded(1))
    frames = slerp(a, b, torch.linspace(0, 1, 5))
    assert frames.shape == (5, 3, 32)
    assert torch.equal(frames[0], a) and torch.equal(frames[-1], b)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)


def test_slerp_matches_a_hand_computed_case_and_is_not_normalised_lerp():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # a third of the way along the quarter circle: 30 degrees
    assert torch.allclose(slerp(a, b, 1 / 3), torch.tensor([math.sqrt(3) / 2, 0.5]), atol=1e-6)
    nlerp = normalize(2 / 3 * a + 1 / 3 * b)  # (0.894, 0.447): what an element-wise interpolation gives
    assert (slerp(a, b, 1 / 3) - nlerp).abs().max() > 0.05
    # norms are interpolated linearly: |a| = 2, |b| = 4 -> 3 at t = 0.5, direction at 45 degrees
    two, four = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 4.0])
    assert torch.allclose(slerp(two, four, 0.5), torch.tensor([3 / math.sqrt(2), 3 / math.sqrt(2)]), atol=1e-6)


def test_slerp_stays_on_the_sphere_with_angle_linear_in_t():
    a = normalize(torch.randn(4, 64, generator=seeded(2)))
    b = normalize(torch.randn(4, 64, generator=seeded(3)))
    t = torch.linspace(0, 1, 9)
    path = slerp(a, b, t)
    assert torch.allclose(path.norm(dim=-1), torch.ones(9, 4), atol=1e-5)
    omega = (a * b).sum(-1).acos()
    angle_from_a = (path * a).sum(-1).clamp(-1, 1).acos()
    assert torch.allclose(angle_from_a, t[:, None] * omega, atol=1e-3)


def test_slerp_of_latents_and_degenerate_cases():
    x, y = torch.randn(1, 3, 8, 8, generator=seeded(0)), torch.randn(1, 3, 8, 8, generator=seeded(1))
    assert slerp(x, y, torch.tensor([0.0, 0.5, 1.0])).shape == (3, 1, 3, 8, 8)
    v = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(slerp(v, 2 * v, 0.5), 1.5 * v)  # parallel: no NaN
    with pytest.raises(ValueError, match="one shape"):
        slerp(torch.zeros(2, 3), torch.zeros(2, 4), 0.5)


def test_text_diff_direction():
    z_t0, z_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 3.0]])
    assert torch.allclose(text_diff_direction(z_t0, z_t), torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="same CLIP text embedding"):
        text_diff_direction(z_t, z_t)


# --- PCA -----------------------------------------------------------------------------------------------------------


def test_pca_fit_reconstruct_and_round_trip(tmp_path):
    generator = seeded(0)
    basis = torch.randn(4, 32, generator=generator)
    data = torch.randn(50, 4, generator=generator) @ basis + 3.0
    pca = UnCLIPPCA.fit(data, num_components=6)
    assert torch.allclose(pca.components @ pca.components.T, torch.eye(6), atol=1e-5)
    assert (pca.explained_variance[:-1] >= pca.explained_variance[1:]).all()
    assert torch.allclose(pca.reconstruct(data, 4), data, atol=1e-4)  # rank-4 data: 4 components suffice
    assert (pca.reconstruct(data, 2) - data).norm() > (pca.reconstruct(data, 3) - data).norm()
    assert torch.allclose(pca.reconstruct(data[:2], 0), pca.mean.expand(2, -1))

    pca.save_pretrained(tmp_path / "pca")
    assert (tmp_path / "pca" / "diffusion_pytorch_model.safetensors").exists()
    loaded = UnCLIPPCA.from_pretrained(tmp_path, subfolder="pca")
    assert torch.equal(loaded.components, pca.components) and torch.equal(loaded.mean, pca.mean)
    with pytest.raises(ValueError, match="`k` must be"):
        pca.reconstruct(data, 7)
    with pytest.raises(ValueError, match="num_components"):
        UnCLIPPCA.fit(data[:5], num_components=10)


# --- scheduler: DDIM eta and inversion on the same timesteps ---------------------------------------------------------


@pytest.mark.parametrize("variance_type", ["learned_range", "fixed_small_log"])
def test_inversion_is_the_exact_inverse_of_ddim_eta_zero(variance_type):
    """
    With a prediction that does not depend on x, inverting then sampling returns the image: same timesteps, same
    alphas, clipping included (float64, since ᾱ_999 ≈ 2e-9 amplifies float32 rounding at the first step).
    """
    forward = UnCLIPScheduler(variance_type=variance_type)
    inverse = UnCLIPInverseScheduler.from_config(forward.config)
    forward.set_timesteps(10)
    inverse.set_timesteps(10)
    assert torch.equal(inverse.timesteps, forward.timesteps.flip(0))
    image = torch.rand(1, 3, 8, 8, generator=seeded(0), dtype=torch.float64) * 2 - 1
    channels = 6 if variance_type == "learned_range" else 3
    eps = {
        int(t): 0.3 * torch.randn(1, channels, 8, 8, generator=seeded(int(t)), dtype=torch.float64)
        for t in forward.timesteps
    }
    x = image
    for t in inverse.timesteps:
        x = inverse.step(eps[int(t)], t, x).prev_sample
    for t in forward.timesteps:
        x = forward.step(eps[int(t)], t, x, eta=0.0).prev_sample
    assert (x - image).abs().max() < 1e-9


def test_eta_sampling():
    scheduler = UnCLIPScheduler()
    scheduler.set_timesteps(5)
    sample, eps = torch.randn(1, 3, 4, 4, generator=seeded(0)), torch.randn(1, 3, 4, 4, generator=seeded(1))
    t = scheduler.timesteps[1]
    deterministic = [scheduler.step(eps, t, sample, eta=0.0, generator=seeded(i)).prev_sample for i in range(2)]
    assert torch.equal(*deterministic)
    random = [scheduler.step(eps, t, sample, eta=1.0, generator=seeded(i)).prev_sample for i in range(2)]
    assert not torch.allclose(*random)
    with pytest.raises(ValueError, match="eta"):
        scheduler.step(eps, t, sample, eta=1.5)


# --- best-of-N prior ------------------------------------------------------------------------------------------------


def test_best_of_candidates_picks_the_highest_cosine():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[0.0, 5.0], [3.0, 0.1], [1.0, 0.0], [0.1, 0.2]])
    assert torch.equal(best_of_candidates(candidates, text, 2), torch.tensor([[3.0, 0.1], [0.1, 0.2]]))


def test_prior_num_candidates_keeps_the_max_dot_candidate(pipe):
    pipe.prior = copy.deepcopy(pipe.prior)
    with torch.no_grad():  # the random prior's clip_std is 0: every embedding would be clip_mean
        pipe.prior.clip_std.fill_(1.0)
    n = 4
    kwargs = dict(prior_num_inference_steps=3, decoder_num_inference_steps=2, super_res_num_inference_steps=2)
    candidates = pipe("horse", num_images_per_prompt=n, generator=seeded(0), output_type="pt", **kwargs).image_embeds
    best = pipe("horse", prior_num_candidates=n, generator=seeded(0), output_type="pt", **kwargs).image_embeds
    tokens = pipe.tokenizer(["horse"], padding="max_length", return_tensors="pt")
    text = pipe.text_encoder(tokens.input_ids).text_embeds
    scores = (normalize(candidates) * normalize(text)).sum(-1)
    assert len(set(scores.tolist())) == n
    assert torch.allclose(best, candidates[scores.argmax()][None], atol=1e-5)

    prior = UnCLIPPriorPipeline(
        prior=pipe.prior, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, prior_scheduler=pipe.prior_scheduler
    )
    prior.set_progress_bar_config(disable=True)
    alone = prior("horse", prior_num_candidates=n, num_inference_steps=3, generator=seeded(0)).image_embeds
    assert torch.allclose(alone, best, atol=1e-5)


def test_prior_num_candidates_errors(pipe):
    with pytest.raises(ValueError, match="prior_num_candidates"):
        pipe("horse", prior_num_candidates=0, **FEW_STEPS)
    with pytest.raises(ValueError, match="prior_num_candidates"):
        pipe("horse", prior_num_candidates=2, conditioning="text_embedding", **FEW_STEPS)


# --- CLIP re-ranking ------------------------------------------------------------------------------------------------


@pytest.fixture
def rerank_pipe(tiny_components, tiny_variation_components):
    components = dict(tiny_components)
    components["image_encoder"] = tiny_variation_components["image_encoder"]
    components["feature_extractor"] = tiny_variation_components["feature_extractor"]
    pipe = UnCLIPPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_rerank_orders_each_prompt_by_clip_score(rerank_pipe):
    out = rerank_pipe(
        ["horse", "red circle"], num_images_per_prompt=3, rerank=True, generator=seeded(0), output_type="pt",
        **FEW_STEPS,
    )
    assert out.images.shape[0] == 6 and out.scores.shape == (6,)
    for group in out.scores.view(2, 3):
        assert (group[:-1] >= group[1:]).all()
    # the scores belong to the images they are returned with
    tokens = rerank_pipe.tokenizer(["horse"] * 3 + ["red circle"] * 3, padding="max_length", return_tensors="pt")
    text = rerank_pipe.text_encoder(tokens.input_ids).text_embeds
    assert torch.allclose(rerank_pipe.clip_scores(out.images, text), out.scores, atol=1e-5)
    # same images as without re-ranking, reordered
    plain = rerank_pipe(
        ["horse", "red circle"], num_images_per_prompt=3, generator=seeded(0), output_type="pt", **FEW_STEPS
    ).images
    assert torch.allclose(plain.sum(0), out.images.sum(0), atol=1e-4)
    pil = rerank_pipe("horse", num_images_per_prompt=2, rerank=True, output_type="pil", **FEW_STEPS)
    assert len(pil.images) == 2 and pil.scores[0] >= pil.scores[1]


def test_rerank_without_image_encoder_names_the_fix(pipe):
    with pytest.raises(ValueError, match="image_encoder"):
        pipe("horse", rerank=True, **FEW_STEPS)


def test_eta_must_be_in_range(pipe):
    with pytest.raises(ValueError, match="decoder_eta"):
        pipe("horse", decoder_eta=-0.1, **FEW_STEPS)
    with pytest.raises(ValueError, match="super_res_eta"):
        pipe("horse", super_res_eta=2, **FEW_STEPS)


def test_decoder_eta_zero_is_deterministic_and_eta_one_is_not(pipe):
    latents = dict(
        decoder_latents=torch.randn(1, 3, 32, 32, generator=seeded(1)),
        super_res_latents=torch.randn(1, 3, 128, 128, generator=seeded(2)),
    )
    kwargs = dict(conditioning="text_embedding", output_type="np", **latents, **FEW_STEPS)  # no prior: no noise there

    def run(eta, seed):
        return pipe("horse", decoder_eta=eta, super_res_eta=eta, generator=seeded(seed), **kwargs).images

    assert np.array_equal(run(0.0, 0), run(0.0, 1))
    assert not np.allclose(run(1.0, 0), run(1.0, 1))
    assert not np.allclose(run(0.0, 0), pipe("horse", generator=seeded(0), **kwargs).images)  # default: ancestral
