"""
The bipartite latent (paper §3): DDIM inversion and reconstruction, variations at η > 0, interpolation, text diffs
and the PCA probe, on tiny components.

The tiny U-Nets are random, and a random network's noise prediction is chaotic at high noise: Karlo's first step
(ᾱ_999 ≈ 2.4e-9) turns any mismatch of it into a ~20000-fold error of x_0, so *no* DDIM inversion reconstructs
through an untrained decoder. The reconstruction tests therefore make the tiny U-Nets "trained-like": their x_0
prediction becomes ``sqrt(ᾱ_t) x_t − 0.03 sqrt(1 − ᾱ_t) unet(x_t, ...)`` (the exact denoiser of N(0, I) data plus the
random, conditioning-dependent U-Net), which is smooth at every noise level as a trained model's is.
"""

import numpy as np
import PIL.Image
import pytest
import torch

from tests.helpers import seeded
from unclip_pipelines import UnCLIPImageVariationPipeline, UnCLIPInversion, UnCLIPPCA, probe_pca_grid, slerp
from unclip_pipelines.tiny import tiny_unclip_components

FAST = dict(decoder_num_inference_steps=5, fixed_point_iterations=1)


def make_trained_like(unet, scheduler, scale: float = 0.03) -> None:
    forward, alphas = unet.forward, scheduler.alphas_cumprod

    def trained_like(sample, timestep, *args, **kwargs):
        out = forward(sample, timestep, *args, **kwargs)
        alpha = alphas[int(timestep)]
        eps = (1 - alpha).sqrt() * sample[:, :3] + alpha.sqrt() * scale * out.sample[:, :3]
        out.sample = torch.cat([eps, out.sample[:, 3:]], dim=1)
        return out

    unet.forward = trained_like


def variation_pipe(super_res_stages: int) -> UnCLIPImageVariationPipeline:
    components = tiny_unclip_components(image_variation=True, super_res_stages=super_res_stages)
    pipe = UnCLIPImageVariationPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    make_trained_like(pipe.decoder, pipe.decoder_scheduler)
    for first, last in pipe.super_res_stages:
        make_trained_like(first, pipe.super_res_scheduler)
        make_trained_like(last, pipe.super_res_scheduler)
    return pipe


@pytest.fixture(scope="module")
def smooth_pipe():
    """Decoder only (32 px), trained-like."""
    return variation_pipe(super_res_stages=0)


def smooth_image(seed: int, size: int = 32) -> torch.Tensor:
    coarse = torch.rand(1, 3, 8, 8, generator=seeded(seed))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


@pytest.fixture(scope="module")
def inversions(smooth_pipe):
    return [smooth_pipe.invert(smooth_image(seed), **FAST) for seed in (0, 1)]


def reconstruct(pipe, inversion: UnCLIPInversion, **kwargs) -> torch.Tensor:
    return pipe(**inversion.call_kwargs(), output_type="pt", **kwargs).images


# --- inversion ------------------------------------------------------------------------------------------------------


def test_eta_zero_reconstructs_the_inverted_image(smooth_pipe):
    """Measured: 25 steps, no guidance: mean |error| 4.5e-4, max 2.2e-3 (plain DDIM inversion: 1.5e-3 / 7.3e-3)."""
    image = smooth_image(0)
    settings = dict(decoder_num_inference_steps=25, decoder_guidance_scale=1.0)
    refined = (reconstruct(smooth_pipe, smooth_pipe.invert(image, fixed_point_iterations=5, **settings)) - image).abs()
    plain = (reconstruct(smooth_pipe, smooth_pipe.invert(image, fixed_point_iterations=0, **settings)) - image).abs()
    assert refined.mean() < 1e-3 and refined.max() < 5e-3
    assert refined.mean() < plain.mean() / 2  # the fixed-point refinement pays off


def test_reconstruction_with_guidance(smooth_pipe):
    """Guidance makes inversion harder (as for any DDIM inversion); measured at 10 steps: mean 3.7e-3 (plain: 9e-3)."""
    image = smooth_image(0)
    inversion = smooth_pipe.invert(image, decoder_num_inference_steps=10, decoder_guidance_scale=8.0)  # 5 refinements
    assert inversion.decoder_guidance_scale == 8.0
    assert (reconstruct(smooth_pipe, inversion) - image).abs().mean() < 8e-3


def test_inversion_through_the_super_resolution_stage():
    """Measured: 10 decoder + 10 upsampler steps, 3 refinements: mean |error| 3.2e-3, max 1.2e-2 at 128 px."""
    pipe = variation_pipe(super_res_stages=1)
    image = smooth_image(0, size=128)
    inversion = pipe.invert(
        image, decoder_num_inference_steps=10, super_res_num_inference_steps=10, decoder_guidance_scale=1.0,
        fixed_point_iterations=3,
    )
    assert inversion.decoder_latents.shape == (1, 3, 32, 32)
    assert [tuple(x.shape) for x in inversion.super_res_latents] == [(1, 3, 128, 128)]
    error = (reconstruct(pipe, inversion) - image).abs()
    assert error.mean() < 6e-3 and error.max() < 3e-2
    not_inverted = pipe.invert(image, decoder_num_inference_steps=10, invert_super_res=False, fixed_point_iterations=0)
    assert not_inverted.super_res_latents is None


def test_manipulation_defaults_are_the_invertible_settings(smooth_pipe):
    """invert, interpolate and text_diff default to no guidance, 50 decoder and 25 upsampler steps (inversion.py)."""
    import inspect

    from unclip_pipelines.pipelines.inversion import (
        INVERSION_DECODER_STEPS,
        INVERSION_GUIDANCE_SCALE,
        INVERSION_SUPER_RES_STEPS,
    )

    assert (INVERSION_GUIDANCE_SCALE, INVERSION_DECODER_STEPS, INVERSION_SUPER_RES_STEPS) == (1.0, 50, 25)
    for method in (smooth_pipe.invert, smooth_pipe.interpolate, smooth_pipe.text_diff):
        parameters = inspect.signature(method).parameters
        assert parameters["decoder_num_inference_steps"].default == INVERSION_DECODER_STEPS
        assert parameters["decoder_guidance_scale"].default == INVERSION_GUIDANCE_SCALE
        assert parameters["super_res_num_inference_steps"].default == INVERSION_SUPER_RES_STEPS
    inversion = smooth_pipe.invert(smooth_image(0), decoder_num_inference_steps=3, fixed_point_iterations=0)
    assert inversion.decoder_guidance_scale == 1.0


def test_inversion_is_deterministic_and_eta_varies(smooth_pipe, inversions):
    again = smooth_pipe.invert(smooth_image(0), **FAST)
    assert torch.equal(again.decoder_latents, inversions[0].decoder_latents)
    assert torch.equal(again.image_embeds, inversions[0].image_embeds)
    reconstruction = reconstruct(smooth_pipe, inversions[0])
    varied = [
        smooth_pipe(**inversions[0].call_kwargs(eta=1.0), generator=seeded(s), output_type="pt").images for s in (0, 1)
    ]
    assert not torch.allclose(varied[0], varied[1], atol=1e-3)
    assert (varied[0] - reconstruction).abs().mean() > 1e-3


def test_invert_accepts_pil_and_arrays(smooth_pipe, inversions):
    pixels = (smooth_image(0)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    from_pil = smooth_pipe.invert(PIL.Image.fromarray(pixels), **FAST)
    from_array = smooth_pipe.invert(pixels, **FAST)
    assert torch.equal(from_pil.decoder_latents, from_array.decoder_latents)
    assert torch.equal(from_pil.image_embeds, from_array.image_embeds)


# --- interpolation --------------------------------------------------------------------------------------------------


def test_interpolation_with_fixed_noise_ends_on_the_two_images(smooth_pipe):
    a, b = smooth_image(0), smooth_image(1)
    noise = torch.randn(1, 3, 32, 32, generator=seeded(7))
    out = smooth_pipe.interpolate(
        a, b, num_frames=4, decoder_latents=noise, decoder_num_inference_steps=5, output_type="pt",
        decoder_guidance_scale=2.0,
    )
    assert out.images.shape == (4, 3, 32, 32) and out.image_embeds.shape == (4, 32)
    embeds = smooth_pipe.encode_pixels(torch.cat([a, b]))
    assert torch.allclose(out.image_embeds[[0, -1]], embeds, atol=1e-5)
    for frame, embed in ((0, embeds[:1]), (-1, embeds[1:])):
        single = smooth_pipe(
            image_embeddings=embed, decoder_latents=noise, decoder_eta=0.0, decoder_num_inference_steps=5,
            output_type="pt", decoder_guidance_scale=2.0,
        ).images[0]
        assert (out.images[frame] - single).abs().max() < 1e-4
    assert not torch.allclose(out.images[1], out.images[0], atol=1e-3)
    expected_middle = slerp(embeds[0], embeds[1], 1 / 3)
    assert torch.allclose(out.image_embeds[1], expected_middle, atol=1e-6)


def test_interpolation_with_slerped_inverted_noise_ends_on_the_reconstructions(smooth_pipe, inversions):
    out = smooth_pipe.interpolate(inversions[0], smooth_image(1), num_frames=3, noise="slerp", output_type="pt", **FAST)
    for frame, inversion in ((0, inversions[0]), (-1, inversions[1])):
        assert (out.images[frame] - reconstruct(smooth_pipe, inversion)[0]).abs().max() < 1e-4


# --- text diffs -----------------------------------------------------------------------------------------------------


def test_text_diff_frames(smooth_pipe, inversions):
    inversion = inversions[0]
    out = smooth_pipe.text_diff(
        inversion, "a red circle", "a blue square", num_frames=4, max_angle=0.5, output_type="pt"
    )
    assert out.images.shape == (4, 3, 32, 32)
    assert (out.images[0] - reconstruct(smooth_pipe, inversion)[0]).abs().max() < 1e-4
    assert (out.images[-1] - out.images[0]).abs().mean() > 1e-3
    # frame j is slerp(z_i, z_d, θ_j) with θ_j evenly spaced to max_angle: the angle to z_i grows linearly
    z_i = inversion.image_embeds[0]
    cosines = torch.nn.functional.cosine_similarity(out.image_embeds, z_i[None]).clamp(-1, 1)
    angles = cosines.double().acos()
    assert torch.allclose(angles, angles[-1] * torch.linspace(0, 1, 4, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(out.image_embeds.norm(dim=-1), z_i.norm().expand(4), rtol=1e-4)  # only the direction turns
    from_image = smooth_pipe.text_diff(
        smooth_image(0), "a red circle", "a blue square", num_frames=2, output_type="pt", **FAST
    )
    assert (from_image.images[0] - reconstruct(smooth_pipe, inversion)[0]).abs().max() < 1e-4


# --- PCA probe ------------------------------------------------------------------------------------------------------


def test_probe_pca_grid(smooth_pipe):
    pca = UnCLIPPCA.fit(torch.randn(40, 32, generator=seeded(0)), num_components=16)
    images = [smooth_image(0), PIL.Image.fromarray(np.zeros((48, 48, 3), np.uint8))]
    grid = probe_pca_grid(smooth_pipe, images, [0, 4, 16], pca, decoder_num_inference_steps=3, generator=seeded(0))
    assert grid.size == (4 * 32, 2 * 32)
    first_cell = np.asarray(grid)[:32, :32]
    assert np.abs(first_cell / 255.0 - smooth_image(0)[0].permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    with pytest.raises(ValueError, match="`k` must be"):
        probe_pca_grid(smooth_pipe, images, [17], pca, decoder_num_inference_steps=2)


# --- input checks ---------------------------------------------------------------------------------------------------


def test_manipulation_input_errors(smooth_pipe, inversions, pipe):
    a, b = smooth_image(0), smooth_image(1)
    for frames in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="num_frames"):
            smooth_pipe.interpolate(a, b, num_frames=frames)
        with pytest.raises(ValueError, match="num_frames"):
            smooth_pipe.text_diff(inversions[0], "red", "blue", num_frames=frames)
    with pytest.raises(ValueError, match="noise"):
        smooth_pipe.interpolate(a, b, noise="random")
    for angle in (0, -0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="max_angle"):
            smooth_pipe.text_diff(inversions[0], "red", "blue", max_angle=angle)
    with pytest.raises(ValueError, match="same CLIP text embedding"):
        smooth_pipe.text_diff(inversions[0], "red", "red")
    with pytest.raises(ValueError, match="fixed_point_iterations"):
        smooth_pipe.invert(a, fixed_point_iterations=-1)
    with pytest.raises(ValueError, match="one image each"):
        smooth_pipe.interpolate(torch.cat([a, b]), b, decoder_num_inference_steps=2)
    with pytest.raises(ValueError, match="decoder_latents"):
        smooth_pipe.interpolate(a, b, decoder_latents=torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="image encoder"):
        probe_pca_grid(pipe, [a], [1])
    with pytest.raises(ValueError, match="num_frames"):
        pipe.interpolate("horse", "red circle", num_frames=1)


def test_prompt_interpolation_on_the_text_to_image_pipeline(pipe):
    kwargs = dict(prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2)
    out = pipe.interpolate("horse", "red circle", num_frames=3, generator=seeded(0), output_type="np", **kwargs)
    assert out.images.shape == (3, 128, 128, 3) and out.image_embeds.shape == (3, 32)
    slerped = pipe.interpolate(
        "horse", "red circle", num_frames=3, noise="slerp", generator=seeded(0), output_type="np", **kwargs
    )
    assert torch.allclose(slerped.image_embeds, out.image_embeds)
