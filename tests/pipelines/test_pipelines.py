"""Behaviour of the four pipelines: stage composition, call arguments, outputs, callbacks, cascades."""

import numpy as np
import PIL.Image
import pytest
import torch

from tests.helpers import FEW_STEPS, fixed_latents, seeded
from unclip_pipelines import UnCLIPDecoderPipeline, UnCLIPPipeline, UnCLIPPriorPipeline
from unclip_pipelines.tiny import tiny_unclip_components

PRIOR_KEYS = ("prior", "text_encoder", "tokenizer", "prior_scheduler")


def split(pipe):
    prior = UnCLIPPriorPipeline(**{k: pipe.components[k] for k in PRIOR_KEYS})
    decoder = UnCLIPDecoderPipeline(**{k: v for k, v in pipe.components.items() if k not in ("prior", "prior_scheduler")})
    for p in (prior, decoder):
        p.set_progress_bar_config(disable=True)
    return prior, decoder


def test_prior_then_decoder_equals_text_to_image(pipe):
    latents = fixed_latents()
    full = pipe("a red circle", generator=seeded(0), output_type="np", **FEW_STEPS, **latents)
    prior, decoder = split(pipe)
    embeds = prior(
        "a red circle", num_inference_steps=3, generator=seeded(0), latents=latents["prior_latents"]
    ).image_embeds
    assert torch.allclose(embeds, full.image_embeds, atol=1e-6)
    # the decoder pipeline draws the prior's step noise itself, so continue with the generator state after the prior
    generator = seeded(0)
    prior("a red circle", num_inference_steps=3, generator=generator, latents=latents["prior_latents"])
    images = decoder(
        embeds,
        prompt="a red circle",
        generator=generator,
        decoder_num_inference_steps=3,
        super_res_num_inference_steps=2,
        decoder_latents=latents["decoder_latents"],
        super_res_latents=latents["super_res_latents"],
        output_type="np",
    ).images
    assert np.abs(images - full.images).max() <= 1e-4


def test_negative_prompt_changes_the_unconditional_branch(pipe):
    latents = fixed_latents()
    base = pipe("horse", generator=seeded(0), output_type="np", **FEW_STEPS, **latents).images
    neg = pipe("horse", negative_prompt="blue square", generator=seeded(0), output_type="np", **FEW_STEPS, **latents)
    empty = pipe("horse", negative_prompt="", generator=seeded(0), output_type="np", **FEW_STEPS, **latents).images
    assert np.abs(base - empty).max() <= 1e-5  # the default negative prompt is the empty caption
    assert np.abs(base - neg.images).max() > 1e-3
    prior, _ = split(pipe)
    out = prior(["horse", "red circle"], negative_prompt="blue", num_inference_steps=2, generator=seeded(0))
    assert out.image_embeds.shape == out.negative_image_embeds.shape == (2, 32)
    assert prior("horse", num_inference_steps=2).negative_image_embeds is None


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_output_types_and_batching(pipe, output_type):
    out = pipe(["horse", "red circle"], num_images_per_prompt=2, output_type=output_type, **FEW_STEPS)
    if output_type == "pil":
        assert len(out.images) == 4 and all(isinstance(i, PIL.Image.Image) for i in out.images)
        assert out.images[0].size == (128, 128)
    elif output_type == "np":
        assert out.images.shape == (4, 128, 128, 3) and 0 <= out.images.min() and out.images.max() <= 1
    else:
        assert out.images.shape == (4, 3, 128, 128) and isinstance(out.images, torch.Tensor)
    assert out.image_embeds.shape == (4, 32)
    images, = pipe("horse", output_type=output_type, return_dict=False, **FEW_STEPS)
    assert len(images) == 1


def test_same_seed_same_image_other_seed_other_image(pipe):
    a = pipe("horse", generator=seeded(7), output_type="np", **FEW_STEPS).images
    b = pipe("horse", generator=seeded(7), output_type="np", **FEW_STEPS).images
    c = pipe("horse", generator=seeded(8), output_type="np", **FEW_STEPS).images
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_generator_list_gives_per_image_reproducibility(pipe):
    both = pipe("horse", num_images_per_prompt=2, generator=[seeded(1), seeded(2)], output_type="np", **FEW_STEPS)
    again = pipe("horse", num_images_per_prompt=2, generator=[seeded(1), seeded(2)], output_type="np", **FEW_STEPS)
    assert np.array_equal(both.images, again.images)


def test_callback_on_step_end_sees_every_stage_and_can_edit_latents(pipe):
    seen = []

    def callback(p, step, timestep, kwargs):
        seen.append((p.stage, step, tuple(kwargs)))
        return {}

    pipe("horse", callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "model_output"], **FEW_STEPS)
    stages = [s for s, _, _ in seen]
    assert stages == ["prior"] * 3 + ["decoder"] * 3 + ["super_res_1"] * 2
    assert all(keys == ("latents", "model_output") for _, _, keys in seen)

    prior, _ = split(pipe)

    def zero_at_end(p, step, timestep, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == p.num_timesteps - 1 else {}

    embeds = prior("horse", num_inference_steps=3, callback_on_step_end=zero_at_end).image_embeds
    assert torch.allclose(embeds, pipe.prior.clip_mean.expand_as(embeds))


def test_progress_bar_honours_config(pipe, capsys):
    pipe("horse", **FEW_STEPS)
    assert capsys.readouterr().err == ""
    pipe.set_progress_bar_config(disable=False)
    pipe("horse", **FEW_STEPS)
    assert "it/s" in capsys.readouterr().err or "s/it" in capsys.readouterr().err


@pytest.mark.parametrize("stages,size", [(0, 16), (2, 256)])
def test_super_res_cascade_of_any_length(stages, size):
    components = tiny_unclip_components(decoder_sample_size=16, super_res_stages=stages)
    pipe = UnCLIPPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    assert len(pipe.super_res_stages) == stages
    calls = []
    out = pipe(
        "horse",
        prior_num_inference_steps=2,
        decoder_num_inference_steps=2,
        super_res_num_inference_steps=[2, 3][:stages] if stages else 7,
        output_type="np",
        callback_on_step_end=lambda p, i, t, kw: calls.append(p.stage) or {},
    )
    assert out.images.shape == (1, size, size, 3)
    assert calls.count("super_res_1") == (2 if stages else 0) and calls.count("super_res_2") == (3 if stages else 0)


def test_last_step_model_runs_only_the_last_step(tiny_components):
    used = []
    components = dict(tiny_components)
    pipe = UnCLIPPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    hooks = [
        pipe.super_res_first.register_forward_hook(lambda *a: used.append("first")),
        pipe.super_res_last.register_forward_hook(lambda *a: used.append("last")),
    ]
    try:
        pipe("horse", prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=4)
    finally:
        for hook in hooks:
            hook.remove()
    assert used == ["first", "first", "first", "last"]


def test_decoder_pipeline_without_prompt_uses_the_empty_caption(pipe):
    _, decoder = split(pipe)
    embeds = torch.randn(2, 32, generator=seeded(0))
    kwargs = dict(decoder_num_inference_steps=2, super_res_num_inference_steps=2, output_type="np")
    a = decoder(embeds, generator=seeded(1), **kwargs).images
    b = decoder(embeds, prompt=["", ""], generator=seeded(1), **kwargs).images
    c = decoder(embeds, prompt="red circle", generator=seeded(1), **kwargs).images
    assert a.shape == (2, 128, 128, 3)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_image_variation_pipeline_varies_and_encodes(variation_pipe):
    rng = np.random.default_rng(0)
    picture = PIL.Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    out = variation_pipe(picture, num_images_per_prompt=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2, output_type="np")
    assert out.images.shape == (2, 128, 128, 3)
    assert not np.allclose(out.images[0], out.images[1])  # fresh decoder noise per variation
    assert torch.allclose(out.image_embeds[0], out.image_embeds[1])
    from_array = variation_pipe.encode_image(np.asarray(picture))
    assert torch.allclose(from_array, variation_pipe.encode_image(picture), atol=1e-5)
