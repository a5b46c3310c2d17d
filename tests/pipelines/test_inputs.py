"""Bad input gets a clear ValueError/TypeError that says what to fix."""

import numpy as np
import pytest
import torch

from tests.helpers import FEW_STEPS
from unclip_pipelines import UnCLIPDecoderPipeline


@pytest.mark.parametrize(
    "prompt,error,match",
    [
        ("", ValueError, "empty text"),
        ("   ", ValueError, "empty text"),
        ([], ValueError, "empty list"),
        (["horse", ""], ValueError, r"position\(s\) \[1\]"),
        (None, ValueError, "required"),
        (3, TypeError, "string or a list"),
        (["horse", 3], TypeError, "string or a list"),
    ],
)
def test_bad_prompts(pipe, prompt, error, match):
    with pytest.raises(error, match=match):
        pipe(prompt, **FEW_STEPS)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(prior_num_inference_steps=0), "prior_num_inference_steps"),
        (dict(decoder_num_inference_steps=-2), "decoder_num_inference_steps"),
        (dict(super_res_num_inference_steps=0), "super_res_num_inference_steps"),
        (dict(super_res_num_inference_steps=[2, 2]), "cascade has 1 stage"),
        (dict(prior_num_inference_steps=2.5), "positive integer"),
        (dict(num_images_per_prompt=0), "num_images_per_prompt"),
        (dict(prior_guidance_scale=-1.0), "prior_guidance_scale"),
        (dict(decoder_guidance_scale=-0.5), "decoder_guidance_scale"),
        (dict(output_type="latent"), "output_type"),
        (dict(negative_prompt=["a", "b"]), "one negative prompt per prompt"),
        (dict(generator=[torch.Generator(), torch.Generator()]), "2 generators for a batch of 1"),
        (dict(callback_on_step_end_tensor_inputs=["noise"]), "callback_on_step_end_tensor_inputs"),
    ],
)
def test_bad_arguments(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe("horse", **{**FEW_STEPS, **kwargs})


@pytest.mark.parametrize(
    "name,shape",
    [("prior_latents", (1, 16)), ("decoder_latents", (1, 3, 16, 16)), ("super_res_latents", (2, 3, 128, 128))],
)
def test_latents_of_the_wrong_shape(pipe, name, shape):
    with pytest.raises(ValueError, match=rf"`{name}` has shape .* needs"):
        pipe("horse", **{**FEW_STEPS, name: torch.randn(shape)})


def test_long_prompt_is_truncated_with_a_warning(pipe, monkeypatch):
    warnings = []
    monkeypatch.setattr("unclip_pipelines.pipelines.stages.logger.warning", warnings.append)
    out = pipe("horse " * 100, output_type="np", **FEW_STEPS)
    assert out.images.shape == (1, 128, 128, 3)
    assert len(warnings) == 1 and "truncated" in warnings[0]
    pipe("horse", **FEW_STEPS)
    assert len(warnings) == 1


def test_text_model_output_needs_its_mask(pipe):
    encoded = pipe.text_encoder(pipe.tokenizer(["horse"], padding="max_length", return_tensors="pt").input_ids)
    with pytest.raises(ValueError, match="text_attention_mask"):
        pipe(text_model_output=(encoded.text_embeds, encoded.last_hidden_state), **FEW_STEPS)
    with pytest.raises(ValueError, match="not both"):
        pipe("horse", text_model_output=(encoded.text_embeds, encoded.last_hidden_state), **FEW_STEPS)


@pytest.mark.parametrize(
    "image,error,match",
    [
        ("photo.png", TypeError, "PIL images, numpy arrays or a torch.Tensor"),
        ([1, 2], TypeError, "PIL images, numpy arrays"),
        ([], ValueError, "empty list"),
        (torch.randn(3, 32, 32), ValueError, r"\(batch, 3, height, width\)"),
    ],
)
def test_bad_images(variation_pipe, image, error, match):
    with pytest.raises(error, match=match):
        variation_pipe(image, decoder_num_inference_steps=2, super_res_num_inference_steps=2)


def test_image_and_embeddings_are_exclusive(variation_pipe):
    with pytest.raises(ValueError, match="exactly one"):
        variation_pipe(decoder_num_inference_steps=2)
    with pytest.raises(ValueError, match="exactly one"):
        variation_pipe(np.zeros((32, 32, 3), np.uint8), image_embeddings=torch.randn(1, 32))


def test_embeddings_of_the_wrong_width(pipe, variation_pipe):
    with pytest.raises(ValueError, match=r"needs \(batch, 32\)"):
        variation_pipe(image_embeddings=torch.randn(1, 48), decoder_num_inference_steps=2)
    decoder = UnCLIPDecoderPipeline(**{k: v for k, v in pipe.components.items() if k not in ("prior", "prior_scheduler")})
    with pytest.raises(TypeError, match="torch.Tensor"):
        decoder(image_embeds=np.zeros((1, 32)))
    with pytest.raises(ValueError, match="2 prompts for 1 image embeddings"):
        decoder(torch.randn(1, 32), prompt=["a", "b"])


def test_super_res_stage_without_scheduler(tiny_components):
    from unclip_pipelines import UnCLIPPipeline

    with pytest.raises(ValueError, match="super_res_scheduler"):
        UnCLIPPipeline(**{**tiny_components, "super_res_scheduler": None})
