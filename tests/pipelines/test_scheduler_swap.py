"""Any diffusers scheduler on any stage: no `prev_timestep` crash, the model's beta schedule kept."""

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

from tests.helpers import fixed_latents, seeded
from unclip_pipelines import UnCLIPImageVariationPipeline

STAGES = ("prior_scheduler", "decoder_scheduler", "super_res_scheduler")


def swap(pipe, cls, stages=STAGES):
    for name in stages:
        setattr(pipe, name, cls.from_config(getattr(pipe, name).config))


@pytest.mark.parametrize("cls", [DDIMScheduler, DPMSolverMultistepScheduler])
def test_every_stage_runs_with(cls, pipe):
    swap(pipe, cls)
    for name in STAGES:
        scheduler = getattr(pipe, name)
        assert isinstance(scheduler, cls)
        assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    counted = []
    out = pipe(
        "horse",
        prior_num_inference_steps=4,
        decoder_num_inference_steps=4,
        super_res_num_inference_steps=3,
        generator=seeded(0),
        output_type="np",
        callback_on_step_end=lambda p, i, t, kw: counted.append(p.stage) or {},
    )
    assert out.images.shape == (1, 128, 128, 3) and np.isfinite(out.images).all()
    assert counted.count("prior") == 4 and counted.count("decoder") == 4 and counted.count("super_res_1") == 3


@pytest.mark.parametrize("cls", [EulerDiscreteScheduler, DDPMScheduler, HeunDiscreteScheduler])
def test_decoder_and_super_res_run_with(cls, pipe):
    swap(pipe, cls, stages=("decoder_scheduler", "super_res_scheduler"))
    out = pipe("horse", prior_num_inference_steps=2, decoder_num_inference_steps=3, super_res_num_inference_steps=2, output_type="np")
    assert out.images.shape == (1, 128, 128, 3) and np.isfinite(out.images).all()


def test_ddim_decoder_is_deterministic_and_differs_from_ancestral(pipe):
    latents = fixed_latents()
    kwargs = dict(prior_num_inference_steps=3, decoder_num_inference_steps=4, super_res_num_inference_steps=2, output_type="np", **latents)
    ancestral = pipe("horse", generator=seeded(0), **kwargs).images
    swap(pipe, DDIMScheduler, stages=("decoder_scheduler",))
    a = pipe("horse", generator=seeded(0), **kwargs).images
    b = pipe("horse", generator=seeded(0), **kwargs).images
    assert np.array_equal(a, b)
    assert not np.allclose(a, ancestral)


def test_learned_variance_reaches_schedulers_that_use_it(pipe):
    """DPM-Solver's learned_range drops the variance channels itself; DDIM gets only the epsilon channels."""
    shapes = {}
    for cls in (DPMSolverMultistepScheduler, DDIMScheduler):
        swap(pipe, cls, stages=("decoder_scheduler",))
        step = pipe.decoder_scheduler.step

        def spy(model_output, *args, _name=cls.__name__, _step=step, **kwargs):
            shapes[_name] = model_output.shape[1]
            return _step(model_output, *args, **kwargs)

        pipe.decoder_scheduler.step = spy
        pipe("horse", prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2)
    assert shapes == {"DPMSolverMultistepScheduler": 6, "DDIMScheduler": 3}


def test_variation_pipeline_with_dpm_solver(variation_pipe):
    swap(variation_pipe, DPMSolverMultistepScheduler, stages=("decoder_scheduler", "super_res_scheduler"))
    out = variation_pipe(image_embeddings=torch.randn(1, 32), decoder_num_inference_steps=3, super_res_num_inference_steps=2, output_type="np")
    assert out.images.shape == (1, 128, 128, 3)
