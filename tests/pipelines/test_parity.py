"""The test of record: identical weights and latents give diffusers 0.42.1's deprecated unCLIP output."""

import numpy as np
import pytest
import torch
from diffusers import UnCLIPScheduler as DeprecatedUnCLIPScheduler
from diffusers.pipelines.deprecated import unclip as deprecated
from PIL import Image

from tests.helpers import fixed_latents, seeded

STEPS = dict(decoder_num_inference_steps=4, super_res_num_inference_steps=3)
KARLO_COMPONENTS = ("super_res_first", "super_res_last")


def oracle(cls, components):
    """diffusers' deprecated pipeline over the very same module objects (only the schedulers are its own)."""
    kwargs = {k: v for k, v in components.items() if not k.startswith(("super_res_2", "super_res_3"))}
    for name in ("prior_scheduler", "decoder_scheduler", "super_res_scheduler"):
        if name in kwargs:
            kwargs[name] = DeprecatedUnCLIPScheduler.from_config(kwargs[name].config)
    pipe = cls(**{k: v for k, v in kwargs.items() if k in cls._get_signature_keys(cls)[0]})
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("prompt,num_images", [("horse", 1), (["a red circle", "horse"], 2)])
def test_text_to_image_matches_deprecated_pipeline(pipe, tiny_components, prompt, num_images):
    batch = (1 if isinstance(prompt, str) else len(prompt)) * num_images
    latents = fixed_latents(batch=batch)
    kwargs = dict(
        num_images_per_prompt=num_images, prior_num_inference_steps=4, output_type="np", **STEPS, **latents
    )
    ours = pipe(prompt, generator=seeded(1), **kwargs)
    theirs = oracle(deprecated.UnCLIPPipeline, tiny_components)(prompt, generator=seeded(1), **kwargs)
    assert ours.images.shape == (batch, 128, 128, 3)
    assert np.abs(ours.images - theirs.images).max() <= 1e-4
    assert ours.images.std() > 0.05  # not a saturated image that would hide differences


def test_text_to_image_matches_with_precomputed_text_embeddings(pipe, tiny_components):
    tokens = pipe.tokenizer(["horse"], padding="max_length", max_length=77, return_tensors="pt")
    encoded = pipe.text_encoder(tokens.input_ids)
    text_model_output = (encoded.text_embeds, encoded.last_hidden_state)
    kwargs = dict(
        text_model_output=text_model_output,
        text_attention_mask=tokens.attention_mask.bool(),
        prior_num_inference_steps=3,
        output_type="np",
        **STEPS,
        **fixed_latents(),
    )
    ours = pipe(generator=seeded(2), **kwargs).images
    theirs = oracle(deprecated.UnCLIPPipeline, tiny_components)(generator=seeded(2), **kwargs).images
    assert np.abs(ours - theirs).max() <= 1e-4


@pytest.mark.parametrize("input_kind", ["pil", "pil_list", "tensor", "embeddings"])
def test_image_variation_matches_deprecated_pipeline(variation_pipe, tiny_variation_components, input_kind):
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)) for _ in range(2)]
    batch = 2 if input_kind in ("pil_list", "embeddings") else 1
    if input_kind == "pil":
        inputs = dict(image=pictures[0])
    elif input_kind == "pil_list":
        inputs = dict(image=pictures)
    elif input_kind == "tensor":
        inputs = dict(image=variation_pipe.feature_extractor(images=pictures[:1], return_tensors="pt").pixel_values)
    else:
        inputs = dict(image_embeddings=variation_pipe.encode_image(pictures))
    latents = fixed_latents(batch=batch)
    kwargs = dict(
        decoder_latents=latents["decoder_latents"],
        super_res_latents=latents["super_res_latents"],
        output_type="np",
        **STEPS,
    )
    ours = variation_pipe(generator=seeded(3), **inputs, **kwargs).images
    theirs = oracle(deprecated.UnCLIPImageVariationPipeline, tiny_variation_components)(
        generator=seeded(3), **inputs, **kwargs
    ).images
    assert ours.shape == (batch, 128, 128, 3)
    assert np.abs(ours - theirs).max() <= 1e-4


def test_parity_fails_when_weights_differ(pipe, tiny_components):
    """Guard against a vacuous oracle: perturbing one decoder weight must break the comparison."""
    kwargs = dict(prior_num_inference_steps=3, output_type="np", **STEPS, **fixed_latents())
    theirs = oracle(deprecated.UnCLIPPipeline, tiny_components)("horse", generator=seeded(4), **kwargs).images
    original = pipe.decoder.conv_out.bias.detach().clone()
    try:
        with torch.no_grad():
            pipe.decoder.conv_out.bias.add_(0.05)
        ours = pipe("horse", generator=seeded(4), **kwargs).images
    finally:
        with torch.no_grad():
            pipe.decoder.conv_out.bias.copy_(original)
    assert np.abs(ours - theirs).max() > 1e-3
