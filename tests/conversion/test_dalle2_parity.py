"""
Parity of the converted ports with the real DALLE2-pytorch package (a test extra: see docs/conversion.md).

Tiny random source models are built with ``dalle2_pytorch`` itself, converted from their state dicts / trainer files,
and compared: network forward passes (conditional and guidance-null branches) and whole sampling loops with matched
noise. Tolerance: max abs difference 1e-5 in float32.
"""

from __future__ import annotations

import pytest
import torch

from unclip_pipelines.conversion.dalle2 import (
    convert_dalle2_decoder,
    convert_dalle2_prior,
    convert_dalle2_to_diffusers,
)
from unclip_pipelines.schedulers import UnCLIPScheduler

from . import dalle2_source as src

try:
    d2 = src.import_dalle2_pytorch()
except ImportError as error:  # the test extra is not installed
    pytest.skip(f"dalle2_pytorch not importable ({error})", allow_module_level=True)

TOL = 1e-5
#: whole sampling loops: each forward pass agrees within ~1e-6, and x_0-prediction feeds every step's rounding into
#: the next (measured: ~1e-5 after 50 unguided prior steps, ~3e-5 with guidance 3, on values up to ~2)
SAMPLING_TOL = 1e-4


pytestmark = pytest.mark.usefixtures("single_thread")


def _prior_call(model, inputs, **extra):
    kwargs = {
        "proj_embedding": inputs["text_embed"],
        "encoder_hidden_states": inputs["text_encodings"],
        "attention_mask": inputs["mask"],
    }
    if model.config.self_cond:
        kwargs["self_cond"] = inputs["self_cond"]
    with torch.no_grad():
        return model(inputs["image_embed"], inputs["timesteps"], **kwargs, **extra).predicted_image_embedding


PRIOR_VARIANTS = {
    "default": {},
    "normformer_continuous_time_multi_tokens": {
        "normformer": True, "num_timesteps": None, "num_text_embeds": 2, "num_image_embeds": 2, "num_time_embeds": 2,
        "norm_in": True, "ff_mult": 2,
    },
    "self_cond_no_rotary_no_final_proj": {"self_cond": True, "rotary_emb": False, "final_proj": False},
    "laion_like_24x768_shape_family": {"dim_head": 8, "heads": 8, "depth": 3, "normformer": True, "max_text_len": 6},
}


@pytest.mark.parametrize("variant", list(PRIOR_VARIANTS))
def test_prior_network_parity(variant):
    kwargs = PRIOR_VARIANTS[variant]
    prior = src.build_source_prior(d2, **kwargs)
    inputs = src.prior_inputs()
    expected = src.source_prior_outputs(d2, prior, inputs)
    config = {"prior": {"net": {"self_cond": kwargs.get("self_cond", False)}}}
    model, _, notes = convert_dalle2_prior(prior.state_dict(), version=str(d2.__version__), config=config)
    assert (_prior_call(model, inputs) - expected["cond"]).abs().max() <= TOL
    ones = torch.ones(3, dtype=torch.bool)
    null = _prior_call(model, inputs, text_cond_drop_mask=ones, image_cond_drop_mask=ones)
    assert (null - expected["null"]).abs().max() <= TOL


#: DDPM sampling set-ups of the prior: x_0 prediction (the default), and v-prediction with DALLE2-pytorch's other
#: schedules, with the ±1 x_0 clamp DiffusionPrior applies without predict_x_start (jsd: ᾱ = 0 at the first step)
PRIOR_SAMPLERS = {
    "x_start_cosine": {},
    "v_sigmoid": {"beta_schedule": "sigmoid", "prior_kwargs": {"predict_v": True}},
    "v_jsd_clamped": {"beta_schedule": "jsd", "prior_kwargs": {"predict_v": True, "predict_x_start": False}},
}


@pytest.mark.parametrize("sampler", list(PRIOR_SAMPLERS))
def test_prior_ddpm_sampling_parity_with_guidance(sampler):
    """DiffusionPrior.p_sample_loop (all 20 steps, cond_scale 3) vs UnCLIPScheduler + the port, same noise."""
    kwargs = PRIOR_SAMPLERS[sampler]
    prior = src.build_source_prior(d2, seed=3, timesteps=20, **kwargs)
    inputs = src.prior_inputs(batch=2)
    text_cond = {"text_embed": inputs["text_embed"], "text_encodings": inputs["text_encodings"]}
    torch.manual_seed(1234)
    with torch.no_grad():
        expected = prior.p_sample_loop((2, 32), text_cond=text_cond, cond_scale=3.0)

    config = {"prior": kwargs.get("prior_kwargs", {})}
    model, sched_cfg, _ = convert_dalle2_prior(prior.state_dict(), version=str(d2.__version__), config=config)
    assert sched_cfg["prediction_type"] == ("v_prediction" if config["prior"] else "sample")
    scheduler = UnCLIPScheduler.from_config({k: v for k, v in sched_cfg.items() if k != "_class_name"})
    scheduler.set_timesteps(20)
    torch.manual_seed(1234)
    latents = torch.randn(2, 32) * scheduler.init_noise_sigma
    drop = torch.ones(2, dtype=torch.bool)
    for t in scheduler.timesteps:
        cond = _prior_call(model, {**inputs, "image_embed": latents, "timesteps": t})
        null = _prior_call(
            model, {**inputs, "image_embed": latents, "timesteps": t}, text_cond_drop_mask=drop, image_cond_drop_mask=drop
        )
        latents = scheduler.step(null + (cond - null) * 3.0, t, latents).prev_sample
    result = model.post_process_latents(latents)
    assert torch.isfinite(expected).all()
    assert (result - expected).abs().max() <= SAMPLING_TOL, (result - expected).abs().max()


def test_prior_trainer_checkpoint_end_to_end(tmp_path):
    """A real DiffusionPriorTrainer.save file: pickled objects need allow_pickle; EMA weights are chosen."""
    trainer_cls = getattr(d2, "DiffusionPriorTrainer")
    prior = src.build_source_prior(d2, seed=4)
    trainer = trainer_cls(prior, lr=1e-4, use_ema=True, warmup_steps=None, device="cpu")
    path = tmp_path / "prior.pth"
    trainer.save(str(path))
    from unclip_pipelines.conversion import ConversionError

    with pytest.raises(ConversionError, match="--allow-pickle"):
        convert_dalle2_to_diffusers(path)
    with pytest.warns(UserWarning):
        result = convert_dalle2_to_diffusers(path, tmp_path / "out", allow_pickle=True)
    assert result.entry == "ema_model" and result.source_version == str(d2.__version__)
    assert (tmp_path / "out" / "prior" / "diffusion_pytorch_model.safetensors").exists()


UNET_VARIANTS = {
    "cascade_text_image_sparse_memory_efficient": {"unets": (src.UNET_1, src.UNET_2), "image_sizes": (16, 32)},
    "nearest_cosine_weightstd_skipscale_selfcond_noise": {
        "unets": (
            {**src.UNET_1, "pixel_shuffle_upsample": False, "cosine_sim_cross_attn": True, "cosine_sim_self_attn": True,
             "resnet_weight_standardization": True, "scale_skip_connection": True, "self_cond": True,
             "add_image_embeds_to_time": True, "num_image_tokens": 2, "num_time_tokens": 3},
            {**src.UNET_2, "init_cross_embed": False, "cross_embed_downsample": True, "memory_efficient": False,
             "final_conv_kernel_size": 3, "resnet_groups": 2},
        ),
        "image_sizes": (8, 16),
        "use_noise_for_lowres_cond": True,
        "learned_variance": False,
        "beta_schedule": ("cosine", "linear"),
    },
}
_NOT_INFERABLE = ("cosine_sim_cross_attn", "cosine_sim_self_attn", "resnet_weight_standardization",
                  "scale_skip_connection", "resnet_groups")


def _unet_call(model, item, **extra):
    kwargs = {"class_labels": item["image_embed"]}
    if "lowres_cond_img" in item:
        kwargs["lowres_cond_img"] = item["lowres_cond_img"]
    if "text_encodings" in item:
        kwargs.update(encoder_hidden_states=item["text_encodings"], attention_mask=item["mask"])
    with torch.no_grad():
        return model(item["x"], item["t"], **kwargs, **extra).sample


@pytest.mark.parametrize("variant", list(UNET_VARIANTS))
def test_decoder_unet_parity(variant):
    kwargs = dict(UNET_VARIANTS[variant])
    decoder = src.build_source_decoder(d2, **kwargs)
    inputs = src.decoder_inputs(decoder)
    expected = src.source_decoder_outputs(d2, decoder, inputs)
    config = {"decoder": {"unets": [{k: v for k, v in u.items() if k in _NOT_INFERABLE} for u in kwargs["unets"]]}}
    unets, scheds, notes = convert_dalle2_decoder(
        decoder.state_dict(), version=str(d2.__version__), config=config, image_sizes=kwargs["image_sizes"]
    )
    for model, item, ref in zip(unets, inputs, expected):
        assert (_unet_call(model, item) - ref["cond"]).abs().max() <= TOL
        drop = torch.ones(item["x"].shape[0], dtype=torch.bool)
        null = _unet_call(model, item, text_cond_drop_mask=drop, image_cond_drop_mask=drop)
        assert (null - ref["null"]).abs().max() <= TOL
    if variant.startswith("nearest"):
        assert [s["beta_schedule"] for s in scheds] == ["squaredcos_cap_v2", "linear"]
        assert scheds[0]["variance_type"] == "fixed_small_log"
        assert unets[0].config.self_cond and unets[1].config.lowres_noise_cond


#: DDPM sampling set-ups of the first decoder U-Net (learned variance): noise prediction with the cosine schedule, and
#: v-prediction with the quadratic one (20 steps: its last beta is 1, so ᾱ = 0 at the first step)
DECODER_SAMPLERS = {
    "epsilon_cosine": {"timesteps": 10},
    "v_quadratic": {"timesteps": 20, "beta_schedule": "quadratic", "predict_v": True},
}


@pytest.mark.parametrize("sampler", list(DECODER_SAMPLERS))
def test_decoder_ddpm_sampling_parity_with_guidance(sampler):
    """Decoder.p_sample_loop of the first U-Net (learned variance, all steps, cond_scale 2) vs UnCLIPScheduler."""
    kwargs = DECODER_SAMPLERS[sampler]
    steps = kwargs["timesteps"]
    decoder = src.build_source_decoder(d2, seed=5, image_sizes=(8,), **kwargs)
    item = src.decoder_inputs(decoder, batch=1)[0]
    unet, noise_scheduler = decoder.unets[0], decoder.noise_schedulers[0]
    torch.manual_seed(99)
    with torch.no_grad():
        expected = decoder.p_sample_loop(
            unet, (1, 3, 8, 8), image_embed=item["image_embed"], noise_scheduler=noise_scheduler,
            text_encodings=item["text_encodings"], cond_scale=2.0, learned_variance=True, clip_denoised=True,
            predict_v=decoder.predict_v[0],
        )  # unnormalised to [0, 1]
    config = {"decoder": {"predict_v": kwargs.get("predict_v", False)}}
    unets, scheds, _ = convert_dalle2_decoder(decoder.state_dict(), version=str(d2.__version__), config=config)
    model = unets[0]
    scheduler = UnCLIPScheduler.from_config({k: v for k, v in scheds[0].items() if k != "_class_name"})
    assert scheduler.config.prediction_type == ("v_prediction" if kwargs.get("predict_v") else "epsilon")
    scheduler.set_timesteps(steps)
    torch.manual_seed(99)
    x = torch.randn(1, 3, 8, 8)
    drop = torch.ones(1, dtype=torch.bool)
    for t in scheduler.timesteps:
        step_item = {**item, "x": x, "t": t}
        cond, null = _unet_call(model, step_item), _unet_call(model, step_item, text_cond_drop_mask=drop, image_cond_drop_mask=drop)
        x = scheduler.step(null + (cond - null) * 2.0, t, x).prev_sample  # DALLE2-pytorch guides every channel
    result = (x + 1) * 0.5
    assert torch.isfinite(expected).all()
    assert (result - expected).abs().max() <= SAMPLING_TOL, (result - expected).abs().max()


@pytest.mark.parametrize("kind", ["prior", "decoder"])
def test_v_prediction_and_dalle2_schedules_round_trip(tmp_path, kind):
    """Real predict_v models with the sigmoid (prior) / quadratic (decoder) schedule: the written scheduler folder
    loads with the source's schedule, betas and cumulative alphas, and v-prediction."""
    if kind == "prior":
        source = src.build_source_prior(d2, seed=6, beta_schedule="sigmoid", prior_kwargs={"predict_v": True})
        noise_scheduler, folder, config = source.noise_scheduler, "prior_scheduler", {"prior": {"predict_v": True}}
    else:
        source = src.build_source_decoder(d2, seed=6, image_sizes=(8,), beta_schedule="quadratic", predict_v=True)
        noise_scheduler, folder = source.noise_schedulers[0], "decoder_scheduler"
        config = {"decoder": {"predict_v": True}}
    path = tmp_path / "source.pth"
    torch.save({"model": source.state_dict(), "version": str(d2.__version__)}, path)
    convert_dalle2_to_diffusers(path, tmp_path / "out", config=config)
    scheduler = UnCLIPScheduler.from_pretrained(tmp_path / "out" / folder)
    assert scheduler.config.beta_schedule == ("sigmoid" if kind == "prior" else "quadratic")
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.num_train_timesteps == 50
    assert torch.equal(scheduler.betas, noise_scheduler.betas)
    assert torch.equal(scheduler.alphas_cumprod, noise_scheduler.alphas_cumprod)
