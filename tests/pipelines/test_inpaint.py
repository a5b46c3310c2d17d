"""Training-free inpainting (RePaint on the decoder and the cascade): unmasked pixels kept, masked ones regenerated."""

import numpy as np
import PIL.Image
import pytest
import torch

from tests.helpers import seeded
from unclip_pipelines import UnCLIPInpaintPipeline
from unclip_pipelines.pipelines.pipeline_unclip_inpaint import mask_to_tensor
from unclip_pipelines.tiny import tiny_unclip_components

STEPS = dict(prior_num_inference_steps=2, decoder_num_inference_steps=3, super_res_num_inference_steps=2)


@pytest.fixture
def inpaint_pipe(tiny_components):
    pipe = UnCLIPInpaintPipeline(**tiny_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image_and_mask(size: int):
    pixels = (np.random.RandomState(0).rand(size, size, 3) * 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : size // 2, size // 3 : 3 * size // 4] = 255
    return PIL.Image.fromarray(pixels), PIL.Image.fromarray(mask)


def test_unmasked_pixels_are_kept_at_the_output_resolution(inpaint_pipe):
    image, mask = image_and_mask(128)  # the output resolution (32 px decoder, one x4 stage)
    out = inpaint_pipe("red circle", image, mask, generator=seeded(0), output_type="np", **STEPS).images[0]
    difference = np.abs(out - np.asarray(image) / 255.0)
    keep = np.asarray(mask) == 0
    assert out.shape == (128, 128, 3)
    assert difference[keep].max() <= 1 / 255
    assert difference[~keep].mean() > 20 / 255  # the masked region is regenerated
    pil = inpaint_pipe("red circle", image, mask, generator=seeded(0), **STEPS).images[0]
    assert np.array_equal(np.asarray(pil)[keep], np.asarray(image)[keep])


def test_resampling_on_a_decoder_only_model_with_tensor_inputs():
    pipe = UnCLIPInpaintPipeline(**tiny_unclip_components(super_res_stages=0))
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 32, 32, generator=seeded(0))
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:20, 4:30] = 1
    kwargs = dict(generator=seeded(0), output_type="pt", **STEPS)
    once = pipe(["horse", "blue square"], image, mask, resample_steps=1, **kwargs).images
    resampled = pipe(["horse", "blue square"], image, mask, resample_steps=3, **{**kwargs, "generator": seeded(0)})
    for out in (once, resampled.images):
        assert out.shape == (2, 3, 32, 32)
        assert (out - image).abs()[mask.expand_as(out) == 0].max() <= 1 / 255
    assert not torch.allclose(once, resampled.images)
    ddim = pipe("horse", image, mask, decoder_eta=0.0, **kwargs).images
    assert (ddim - image).abs()[mask.expand_as(ddim) == 0].max() <= 1 / 255

    # RePaint acts at every step, not only by the final paste: after the step to t = 0 (ᾱ_0 ≈ 1 - 4e-5) the kept
    # region already is the original up to its tiny noise, while the masked region is whatever the decoder made
    seen = {}

    def record(p, i, t, kw):
        seen[(p.stage, i)] = kw["latents"].clone()
        return {}

    pipe("horse", image, mask, callback_on_step_end=record, **kwargs)
    before_last = seen[("decoder", STEPS["decoder_num_inference_steps"] - 2)]
    kept = mask.expand_as(before_last) == 0
    assert (before_last - (image * 2 - 1)).abs()[kept].max() < 0.05
    assert (before_last - (image * 2 - 1)).abs()[~kept].mean() > 0.1


def test_image_of_another_size_is_resized(inpaint_pipe):
    image, mask = image_and_mask(64)
    out = inpaint_pipe("horse", image, mask, output_type="np", **STEPS).images
    assert out.shape == (1, 128, 128, 3)


def test_mask_forms_agree():
    array = np.zeros((8, 8), np.uint8)
    array[2:5, 3:6] = 255
    expected = mask_to_tensor(PIL.Image.fromarray(array))
    assert expected.shape == (1, 1, 8, 8) and expected.sum() == 9
    assert torch.equal(mask_to_tensor(array), expected)
    assert torch.equal(mask_to_tensor(array[..., None] > 0), expected)
    assert torch.equal(mask_to_tensor(torch.from_numpy(array / 255.0)), expected)


def test_inpaint_input_errors(inpaint_pipe):
    image, mask = image_and_mask(128)
    with pytest.raises(ValueError, match="mask of the image's size"):
        inpaint_pipe("horse", image, mask.resize((64, 64)), **STEPS)
    with pytest.raises(TypeError, match="mask_image"):
        inpaint_pipe("horse", image, "mask.png", **STEPS)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inpaint_pipe("horse", image, torch.full((128, 128), 2.0), **STEPS)
    with pytest.raises(ValueError, match="both `image` and `mask_image`"):
        inpaint_pipe("horse", image, None, **STEPS)
    with pytest.raises(ValueError, match="resample_steps"):
        inpaint_pipe("horse", image, mask, resample_steps=0, **STEPS)
    with pytest.raises(ValueError, match="one per output"):
        inpaint_pipe("horse", [image, image, image], mask, num_images_per_prompt=2, **STEPS)
