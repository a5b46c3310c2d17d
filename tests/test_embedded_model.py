"""The embedded Shapes World model that ships in the package: present, within budget, and the CLI's default."""

import glob
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import unclip_pipelines
from unclip_pipelines import UnCLIPImageVariationPipeline, UnCLIPPipeline
from unclip_pipelines.cli import default_model, main
from unclip_pipelines.shapes import judge_image

MODEL = unclip_pipelines.EMBEDDED_MODEL
STEPS = ["--prior-steps", "2", "--decoder-steps", "2", "--super-res-steps", "2"]


def test_embedded_model_ships_as_safetensors_under_50_mb():
    assert os.path.isfile(os.path.join(MODEL, "model_index.json"))
    files = [f for f in glob.glob(os.path.join(MODEL, "**", "*"), recursive=True) if os.path.isfile(f)]
    weights = [f for f in files if f.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt"))]
    assert weights and all(f.endswith(".safetensors") for f in weights), weights
    assert sum(os.path.getsize(f) for f in files) <= 50 * 10**6
    for component in ("image_encoder", "feature_extractor", "super_res_first"):  # variations and the 128 px cascade
        assert os.path.isdir(os.path.join(MODEL, component)), component
    with open(os.path.join(MODEL, "sampling_defaults.json")) as f:
        assert set(json.load(f)) >= {"prior_guidance_scale", "decoder_guidance_scale", "decoder_num_inference_steps"}


def test_cli_defaults_to_the_embedded_model_and_writes_128_px(tmp_path):
    assert default_model() == MODEL
    out = tmp_path / "out.png"
    assert main(["generate", "a red circle to the left of a blue square", "--seed", "0", "--output", str(out), *STEPS]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (128, 128, 3)
    assert image.std() > 5  # not a blank frame


@pytest.fixture(scope="module")
def pipe():
    return UnCLIPPipeline.from_pretrained(MODEL)


def test_embedded_model_draws_a_red_circle(pipe):
    """The shipped weights do the main job at the model's own sampling settings, judged by the world's judge."""
    settings = pipe.sampling_defaults
    generators = [torch.Generator().manual_seed(seed) for seed in range(4)]
    images = pipe(["a red circle"] * 4, generator=generators, **settings).images
    correct = [judge_image(image, "a red circle").correct for image in images]
    assert sum(correct) >= 3, correct


def test_embedded_model_loads_as_the_variation_pipeline(pipe):
    variation = UnCLIPImageVariationPipeline.from_pretrained(MODEL)
    source = pipe("a blue square", prior_num_inference_steps=2, decoder_num_inference_steps=2,
                  super_res_num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    out = variation(source, decoder_num_inference_steps=2, super_res_num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 128, 128, 3)
