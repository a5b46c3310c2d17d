"""
Parity of the pipelines' stages with DALLE2-pytorch's other samplers (the real package, a test extra): its DDIM
samplers (``Dalle2DDIMScheduler``), self-conditioning, and the Imagen-style noising of an upsampler's low-resolution
image.

Tiny random source models are built with ``dalle2_pytorch``, converted, and sampled by the pipelines' own stage code
(``PriorStageMixin.run_prior``, ``DecoderStageMixin.run_decoder`` / ``run_super_res``, which is where the null
branch, self-conditioning and the low-res noising live) from the same global random state as
``DiffusionPrior.p_sample_loop`` / ``Decoder.p_sample_loop`` / ``Decoder.sample``. A whole ``UnCLIPPipeline`` folder
written by the converter from configs with ``sample_timesteps`` is compared too. Tolerance: 1e-4 in float32.
"""

from __future__ import annotations

import pytest
import torch

from unclip_pipelines import Dalle2DDIMScheduler, UnCLIPPipeline, UnCLIPScheduler
from unclip_pipelines.conversion.dalle2 import convert_dalle2_decoder, convert_dalle2_pipeline, convert_dalle2_prior
from unclip_pipelines.conversion.dalle2.schedulers import build_scheduler, ddim_scheduler_config
from unclip_pipelines.models import UnCLIPIdentityTextProjModel
from unclip_pipelines.pipelines.stages import DecoderStageMixin, PriorStageMixin, TextConditioning

from . import dalle2_source as src
from .karlo_tiny import write_tiny_clip

try:
    d2 = src.import_dalle2_pytorch()
except ImportError as error:  # the test extra is not installed
    pytest.skip(f"dalle2_pytorch not importable ({error})", allow_module_level=True)

#: whole guided sampling loops, every forward pass within ~1e-6 (see test_dalle2_parity.py)
SAMPLING_TOL = 1e-4
VERSION = str(d2.__version__)

pytestmark = pytest.mark.usefixtures("single_thread")


class Stages(PriorStageMixin, DecoderStageMixin):
    """The pipelines' stage code on bare components (no CLIP model needed)."""

    def __init__(self, **components):
        self.__dict__.update(components)

    def progress_bar(self, iterable):
        return iterable


def _guided_text(embeds, hidden, mask) -> TextConditioning:
    """``[uncond, cond]`` rows as the pipelines pass them to ports (the null half repeats the conditional one)."""
    return TextConditioning(torch.cat([embeds] * 2), torch.cat([hidden] * 2), torch.cat([mask] * 2), guided=True)


def _scheduler(config: dict, steps: int, total: int, variant: str, eta: float):
    """``Dalle2DDIMScheduler`` (DDIM, as the converter writes it) when ``steps < total``, else ``UnCLIPScheduler``."""
    return build_scheduler(ddim_scheduler_config(config, variant=variant, eta=eta) if steps < total else config)


def _report(name, diff):
    print(f"{name}: max |diff| {diff:.2e}")
    assert diff <= SAMPLING_TOL, (name, diff)


# --------------------------------------------------------------------------------------------------------------------
# prior: DiffusionPrior.p_sample_loop (DDIM below the training steps, eta 1), guidance 3


PRIOR_CASES = {
    # name: (source prior kwargs, sample steps)
    "ddim_x_start_cosine": ({}, 7),
    "ddim_x_start_final_l2norm": ({"prior_kwargs": {"sampling_final_clamp_l2norm": True}}, 6),
    "ddim_v_sigmoid_clamped": ({"beta_schedule": "sigmoid", "prior_kwargs": {"predict_v": True, "predict_x_start": False}}, 9),
    "ddim_self_cond": ({"self_cond": True}, 7),
    "ddpm_self_cond": ({"self_cond": True}, 20),
}


@pytest.mark.parametrize("case", list(PRIOR_CASES))
def test_prior_sampling_parity_with_guidance(case):
    kwargs, steps = PRIOR_CASES[case]
    source = src.build_source_prior(d2, seed=3, timesteps=20, **kwargs)
    inputs = src.prior_inputs(batch=2)
    text_cond = {"text_embed": inputs["text_embed"], "text_encodings": inputs["text_encodings"]}
    torch.manual_seed(11)
    with torch.no_grad():
        expected = source.p_sample_loop((2, 32), text_cond=text_cond, cond_scale=3.0, timesteps=steps)

    config = {"prior": {**kwargs.get("prior_kwargs", {}), "net": {"self_cond": kwargs.get("self_cond", False)}}}
    model, sched_cfg, _ = convert_dalle2_prior(source.state_dict(), version=VERSION, config=config)
    scheduler = _scheduler(sched_cfg, steps, 20, "prior", eta=1.0)
    assert isinstance(scheduler, Dalle2DDIMScheduler if steps < 20 else UnCLIPScheduler)
    stages = Stages(prior=model, prior_scheduler=scheduler)
    text = _guided_text(inputs["text_embed"], inputs["text_encodings"], inputs["mask"])
    torch.manual_seed(11)
    with torch.no_grad():
        result = stages.run_prior(text, steps, 3.0)
    assert torch.isfinite(expected).all()
    _report(f"prior {case}", (result - expected).abs().max())


# --------------------------------------------------------------------------------------------------------------------
# decoder: Decoder.p_sample_loop of the first U-Net (learned variance), guidance 2


DECODER_CASES = {
    # name: (unet kwargs, decoder kwargs, sample steps)
    "ddim_eta0_epsilon_cosine": ({}, {"timesteps": 20}, 6),
    "ddim_eta_half_v_quadratic": ({}, {"timesteps": 20, "beta_schedule": "quadratic", "predict_v": True,
                                       "ddim_sampling_eta": 0.5}, 5),
    "ddim_eta1_self_cond": ({"self_cond": True}, {"timesteps": 20, "ddim_sampling_eta": 1.0}, 5),
    "ddpm_self_cond": ({"self_cond": True}, {"timesteps": 8}, 8),
}


@pytest.mark.parametrize("case", list(DECODER_CASES))
def test_decoder_sampling_parity_with_guidance(case):
    unet_kwargs, kwargs, steps = DECODER_CASES[case]
    total = kwargs["timesteps"]
    source = src.build_source_decoder(d2, seed=5, unets=({**src.UNET_1, **unet_kwargs},), image_sizes=(8,), **kwargs)
    item = src.decoder_inputs(source, batch=2)[0]
    torch.manual_seed(99)
    with torch.no_grad():
        expected = source.p_sample_loop(
            source.unets[0], (2, 3, 8, 8), image_embed=item["image_embed"], noise_scheduler=source.noise_schedulers[0],
            text_encodings=item["text_encodings"], cond_scale=2.0, learned_variance=True, clip_denoised=True,
            predict_v=source.predict_v[0], timesteps=steps,
        )  # unnormalised to [0, 1], not clamped
    config = {"decoder": {"predict_v": kwargs.get("predict_v", False)}}
    unets, scheds, _ = convert_dalle2_decoder(source.state_dict(), version=VERSION, config=config, image_sizes=(8,))
    scheduler = _scheduler(scheds[0], steps, total, "decoder", eta=kwargs.get("ddim_sampling_eta", 0.0))
    stages = Stages(decoder=unets[0], decoder_scheduler=scheduler,
                    text_proj=UnCLIPIdentityTextProjModel(clip_embeddings_dim=32))
    text = _guided_text(torch.zeros(2, 32), item["text_encodings"], item["mask"])
    torch.manual_seed(99)
    with torch.no_grad():
        result = stages.run_decoder(item["image_embed"], text, steps, 2.0)  # clamped to [-1, 1]
    assert torch.isfinite(expected).all()
    _report(f"decoder {case}", (result - (expected * 2 - 1).clamp(-1, 1)).abs().max())


# --------------------------------------------------------------------------------------------------------------------
# an upsampler with Imagen-style noise conditioning (and self-conditioning): Decoder.sample from the second U-Net


@pytest.mark.parametrize("steps", [10, 4])
def test_noise_conditioned_upsampler_parity(steps):
    """``Decoder.sample(start_at_unet_number=2)``: the low-res image noised to level 0.3 (linear schedule), then the
    upsampler's DDPM (10 steps) or DDIM (4 steps, eta 0.5) loop; ``run_super_res`` from the same random state."""
    unets = ({**src.UNET_1, "cond_on_text_encodings": False}, {**src.UNET_2, "self_cond": True})
    source = src.build_source_decoder(
        d2, seed=8, unets=unets, image_sizes=(8, 16), timesteps=10, use_noise_for_lowres_cond=True,
        lowres_noise_sample_level=0.3, beta_schedule=("cosine", "cosine"), sample_timesteps=(None, steps),
        ddim_sampling_eta=0.5,
    )
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    embeds = torch.nn.functional.normalize(torch.randn(2, 32, generator=torch.Generator().manual_seed(5)), dim=-1)
    torch.manual_seed(21)
    with torch.no_grad():
        expected = source.sample(image=image, image_embed=embeds, start_at_unet_number=2, cond_scale=1.0)
    config = {"decoder": {"lowres_noise_sample_level": 0.3, "unets": [{}, {"resnet_groups": 4}],
                          "sample_timesteps": [None, steps], "ddim_sampling_eta": 0.5}}
    converted, scheds, notes = convert_dalle2_decoder(
        source.state_dict(), version=VERSION, config=config, image_sizes=(8, 16)
    )
    upsampler = converted[1]
    assert upsampler.config.lowres_noise_cond and upsampler.config.lowres_noise_sample_level == 0.3
    assert any("lowres_noise_sample_level = 0.3 (from the config)" in note for note in notes)
    stages = Stages(super_res_first=upsampler, super_res_scheduler=_scheduler(scheds[1], steps, 10, "decoder", 0.5))
    torch.manual_seed(21)
    with torch.no_grad():
        result = stages.run_super_res(image * 2 - 1, [steps])
    assert torch.isfinite(expected).all()
    _report(f"noise-conditioned upsampler, {steps} steps", (result - (expected * 2 - 1)).abs().max())


# --------------------------------------------------------------------------------------------------------------------
# a whole converted UnCLIPPipeline folder sampled with DDIM on every stage


def test_ddim_pipeline_folder_matches_dalle2_pytorch(tmp_path):
    """Configs with ``sample_timesteps`` below the 20 training steps: the converter writes Dalle2DDIMSchedulers and
    ``sampling_defaults``; a plain ``UnCLIPPipeline`` call matches ``p_sample_loop`` + ``Decoder.sample``."""
    clip_folder = write_tiny_clip(str(tmp_path / "clip"), text_ctx=8, clip_dim=32)
    prior = src.build_source_prior(d2, seed=3, timesteps=20, self_cond=True)
    upsampler = {**src.UNET_2, "cond_on_text_encodings": True, "text_embed_dim": 32}
    decoder = src.build_source_decoder(
        d2, seed=7, unets=({**src.UNET_1, "text_embed_dim": 32}, upsampler), image_sizes=(8, 16), timesteps=20,
        beta_schedule=("cosine", "cosine"), sample_timesteps=(6, 4), ddim_sampling_eta=0.5,
    )
    torch.save({"model": prior.state_dict(), "version": VERSION}, tmp_path / "prior.pth")
    torch.save({"model": decoder.state_dict(), "version": VERSION}, tmp_path / "decoder.pth")
    prior_config = {"prior": {"sample_timesteps": 8, "net": {"self_cond": True}}}
    decoder_config = {"decoder": {"sample_timesteps": [6, 4], "ddim_sampling_eta": 0.5,
                                  "unets": [{}, {"resnet_groups": upsampler["resnet_groups"]}]}}
    result = convert_dalle2_pipeline(
        tmp_path / "prior.pth", tmp_path / "decoder.pth", clip_folder, tmp_path / "out", image_sizes=(8, 16),
        prior_config=prior_config, decoder_config=decoder_config,
    )
    assert "written as Dalle2DDIMScheduler (eta=1.0" in result.summary()
    pipe = UnCLIPPipeline.from_pretrained(tmp_path / "out")
    for name in ("prior_scheduler", "decoder_scheduler", "super_res_scheduler"):
        assert isinstance(getattr(pipe, name), Dalle2DDIMScheduler), name
    assert pipe.prior_scheduler.config.alphas_cumprod_table == "alphas_cumprod_prev"
    assert pipe.decoder_scheduler.config.eta == 0.5
    steps = {"prior_num_inference_steps": 8, "decoder_num_inference_steps": 6, "super_res_num_inference_steps": 4}
    assert pipe.sampling_defaults == steps

    tokens = pipe.tokenizer(["red", "blue"], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = pipe.text_encoder(tokens.input_ids)
    text_embed = torch.nn.functional.normalize(out.text_embeds, dim=-1)
    text_encodings = out.last_hidden_state * tokens.attention_mask.bool()[..., None]
    torch.manual_seed(0)
    with torch.no_grad():
        expected_embeds = prior.p_sample_loop(
            (2, 32), text_cond={"text_embed": text_embed, "text_encodings": text_encodings}, cond_scale=3.0,
            timesteps=8,
        )
        expected_images = decoder.sample(image_embed=expected_embeds, text_encodings=text_encodings, cond_scale=2.0)
    torch.manual_seed(0)  # DDIM draws the same numbers as DALLE2-pytorch: no extra draws to line up
    images = pipe(["red", "blue"], prior_guidance_scale=3.0, decoder_guidance_scale=2.0, output_type="pt",
                  **pipe.sampling_defaults)
    assert torch.isfinite(expected_images).all()
    _report("DDIM pipeline image embeddings", (images.image_embeds - expected_embeds).abs().max())
    _report("DDIM pipeline images", (images.images - expected_images.clamp(0, 1)).abs().max())
