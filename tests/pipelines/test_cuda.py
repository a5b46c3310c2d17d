"""GPU paths: xformers attention and model CPU offload. Skipped on machines without CUDA."""

import importlib.util

import numpy as np
import pytest
import torch

from tests.helpers import FEW_STEPS, fixed_latents, seeded

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.skipif(importlib.util.find_spec("xformers") is None, reason="needs xformers (pip install .[xformers])")
def test_xformers_attention_matches_sdpa(pipe):
    pipe.to("cuda")
    kwargs = dict(generator=torch.Generator("cuda").manual_seed(0), output_type="np", **FEW_STEPS)
    latents = {k: v.cuda() for k, v in fixed_latents().items()}
    reference = pipe("horse", **kwargs, **latents).images
    pipe.enable_xformers_memory_efficient_attention()
    kwargs["generator"] = torch.Generator("cuda").manual_seed(0)
    assert np.abs(pipe("horse", **kwargs, **latents).images - reference).max() < 5e-2


@cuda
def test_model_cpu_offload_matches_and_keeps_the_prior_on_the_device(pipe):
    latents = fixed_latents()
    pipe.to("cuda")
    reference = pipe("horse", generator=seeded(0), output_type="np", **FEW_STEPS, **latents).images
    pipe.to("cpu")
    pipe.enable_model_cpu_offload()
    offloaded = pipe("horse", generator=seeded(0), output_type="np", **FEW_STEPS, **latents).images
    assert np.abs(offloaded - reference).max() < 5e-2
    assert pipe.decoder.device.type == "cpu"  # offloaded back after the call


def test_xformers_without_cuda_raises_a_clear_error(pipe):
    if torch.cuda.is_available():
        pytest.skip("only meaningful without CUDA")
    if importlib.util.find_spec("xformers") is None:
        pytest.skip("xformers not installed")
    with pytest.raises((ValueError, NotImplementedError)):
        pipe.enable_xformers_memory_efficient_attention()
