"""
The pipelines running converted DALLE2-pytorch folders (``convert_dalle2_pipeline``): parity of a whole
``UnCLIPPipeline`` call with DALLE2-pytorch's own sampling (the real package, a test extra), and the refusals.

The parity test builds a tiny random prior and a two-U-Net decoder (the upsampler also reads the caption) with
``dalle2_pytorch``, converts them with a tiny CLIP text model into a pipeline folder, and compares
``DiffusionPrior.p_sample_loop`` + ``Decoder.sample`` (all 20 training steps, guidance on every U-Net) with the
pipeline's call from the same global random state.
"""

from __future__ import annotations

import json

import pytest
import torch

from unclip_pipelines import (
    Dalle2DDIMScheduler,
    UnCLIPDecoderPipeline,
    UnCLIPPipeline,
    UnCLIPPriorPipeline,
    UnCLIPScheduler,
)
from unclip_pipelines.conversion import ConversionError
from unclip_pipelines.conversion.dalle2 import convert_dalle2_pipeline
from unclip_pipelines.conversion.dalle2.cli import main as cli_main
from unclip_pipelines.models import UnCLIPIdentityTextProjModel, UnCLIPTextProjModel
from unclip_pipelines.models.dalle2 import Dalle2UNet
from unclip_pipelines.pipelines.stages import upscale

from . import dalle2_source as src
from .dalle2_fixtures import decoder_state_dict, noise_scheduler_buffers, prior_state_dict
from .karlo_tiny import write_tiny_clip

#: whole guided sampling loops, every forward pass within ~1e-6 (see test_dalle2_parity.py)
SAMPLING_TOL = 1e-4
STEPS = 20
PROMPTS = ["red", "blue"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return write_tiny_clip(str(tmp_path_factory.mktemp("clip") / "clip"), text_ctx=8, clip_dim=32)


def _write_port_files(folder, decoder_kwargs=None, version="1.15.6"):
    """A prior file and a one-U-Net decoder file written from the ports (the 1.15.6 layout, 50 steps)."""
    prior, decoder = folder / "prior.pth", folder / "decoder.pth"
    torch.save({"model": prior_state_dict(), "version": version}, prior)
    decoder_state = decoder_state_dict(**{"text_embed_dim": 32, **(decoder_kwargs or {})})
    torch.save({"model": decoder_state, "version": version}, decoder)
    return prior, decoder


@pytest.fixture(scope="module")
def port_folder(tmp_path_factory, clip_folder):
    root = tmp_path_factory.mktemp("dalle2-pipeline")
    prior, decoder = _write_port_files(root)
    convert_dalle2_pipeline(prior, decoder, clip_folder, root / "out", image_sizes=(8,))
    return root / "out"


# --------------------------------------------------------------------------------------------------------------------
# parity with DALLE2-pytorch's sampling


def _source_text_cond(pipe, prompts):
    """What DALLE2-pytorch's CLIP adapters give: an l2-normalised text embedding, encodings zeroed after the text."""
    tokens = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = pipe.text_encoder(tokens.input_ids)
    mask = tokens.attention_mask.bool()
    return torch.nn.functional.normalize(out.text_embeds, dim=-1), out.last_hidden_state * mask[..., None]


def test_pipeline_matches_dalle2_pytorch_sampling(tmp_path, clip_folder):
    d2 = _import_d2()
    prior = src.build_source_prior(d2, seed=3, timesteps=STEPS)
    upsampler = {**src.UNET_2, "cond_on_text_encodings": True, "text_embed_dim": 32}
    decoder = src.build_source_decoder(
        d2, seed=7, unets=({**src.UNET_1, "text_embed_dim": 32}, upsampler), image_sizes=(8, 16), timesteps=STEPS,
        beta_schedule=("cosine", "cosine"),
    )
    version = str(d2.__version__)
    torch.save({"model": prior.state_dict(), "version": version}, tmp_path / "prior.pth")
    torch.save({"model": decoder.state_dict(), "version": version}, tmp_path / "decoder.pth")
    # the upsampler's resnet_groups=4 is not readable from the weights: it comes from the training config
    decoder_config = {"decoder": {"unets": [{}, {"resnet_groups": upsampler["resnet_groups"]}]}}
    result = convert_dalle2_pipeline(
        tmp_path / "prior.pth", tmp_path / "decoder.pth", clip_folder, tmp_path / "out", image_sizes=(8, 16),
        decoder_config=decoder_config,
    )
    assert result.dump_path == str(tmp_path / "out")
    pipe = UnCLIPPipeline.from_pretrained(tmp_path / "out")
    assert isinstance(pipe.text_proj, UnCLIPIdentityTextProjModel)
    assert pipe.super_res_first.config.lowres_resample == "nearest"
    steps = {"prior_num_inference_steps": STEPS, "decoder_num_inference_steps": STEPS,
             "super_res_num_inference_steps": STEPS}
    assert pipe.sampling_defaults == steps

    text_embed, text_encodings = _source_text_cond(pipe, PROMPTS)
    torch.manual_seed(0)
    with torch.no_grad():
        expected_embeds = prior.p_sample_loop(
            (2, 32), text_cond={"text_embed": text_embed, "text_encodings": text_encodings}, cond_scale=3.0
        )
        expected_images = decoder.sample(image_embed=expected_embeds, text_encodings=text_encodings, cond_scale=2.0)

    def draw_last_step_noise(pipe, i, t, kwargs):
        # DALLE2-pytorch also draws (and multiplies by 0) the noise of the step to t = 0; UnCLIPScheduler does not
        if i == pipe.num_timesteps - 1:
            torch.randn(kwargs["latents"].shape)
        return kwargs

    torch.manual_seed(0)
    out = pipe(
        PROMPTS, prior_guidance_scale=3.0, decoder_guidance_scale=2.0, output_type="pt",
        callback_on_step_end=draw_last_step_noise, **steps,
    )
    assert torch.isfinite(expected_images).all()
    embeds_diff = (out.image_embeds - expected_embeds).abs().max()
    images_diff = (out.images - expected_images).abs().max()
    print(f"max |diff|: image embeddings {embeds_diff:.2e}, images {images_diff:.2e}")
    assert embeds_diff <= SAMPLING_TOL and images_diff <= SAMPLING_TOL, (embeds_diff, images_diff)

    # the stage pipelines load the same folder and sample the same way
    prior_pipe = UnCLIPPriorPipeline.from_pretrained(tmp_path / "out")
    torch.manual_seed(0)
    prior_out = prior_pipe(PROMPTS, num_inference_steps=STEPS, guidance_scale=3.0)
    assert (prior_out.image_embeds - expected_embeds).abs().max() <= SAMPLING_TOL


def _import_d2():
    try:
        return src.import_dalle2_pytorch()
    except ImportError as error:
        pytest.skip(f"dalle2_pytorch not importable ({error})")


# --------------------------------------------------------------------------------------------------------------------
# the folder, the text projection and the resize


def test_folder_layout_and_unguided_call(port_folder):
    index = json.loads((port_folder / "model_index.json").read_text())
    assert index["prior"][1] == "Dalle2PriorNetwork" and index["decoder"][1] == "Dalle2UNet"
    assert index["text_proj"][1] == "UnCLIPIdentityTextProjModel"
    assert sorted(p.name for p in (port_folder / "text_proj").iterdir()) == ["config.json"]
    pipe = UnCLIPPipeline.from_pretrained(port_folder)
    out = pipe(PROMPTS, prior_num_inference_steps=2, decoder_num_inference_steps=2, prior_guidance_scale=1.0,
               decoder_guidance_scale=1.0, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 3, 8, 8) and torch.isfinite(out.images).all()
    decoder_pipe = UnCLIPDecoderPipeline.from_pretrained(port_folder)
    images = decoder_pipe(out.image_embeds, prompt=PROMPTS, decoder_num_inference_steps=2, output_type="pt",
                          generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 3, 8, 8)


def test_respacing_warning_only_without_dalle2_ddim(port_folder, caplog):
    """Fewer steps than trained through UnCLIPScheduler is not DALLE2-pytorch's sampler (warned); through
    Dalle2DDIMScheduler it is DALLE2-pytorch's DDIM (no warning)."""
    pipe = UnCLIPPipeline.from_pretrained(port_folder)
    kwargs = {"prior_num_inference_steps": 3, "decoder_num_inference_steps": 2, "output_type": "pt"}
    with caplog.at_level("WARNING", logger="unclip_pipelines.pipelines.null_branch"):
        pipe(PROMPTS, **kwargs)
    warned = [r.getMessage() for r in caplog.records if "not DALLE2-pytorch's sampler" in r.getMessage()]
    assert len(warned) == 2 and "timestep_spacing='prior', alphas_cumprod_table='alphas_cumprod_prev'" in warned[0]
    caplog.clear()
    pipe.prior_scheduler = Dalle2DDIMScheduler.from_config(
        pipe.prior_scheduler.config, timestep_spacing="prior", alphas_cumprod_table="alphas_cumprod_prev", eta=1.0
    )
    pipe.decoder_scheduler = Dalle2DDIMScheduler.from_config(pipe.decoder_scheduler.config)
    with caplog.at_level("WARNING", logger="unclip_pipelines.pipelines.null_branch"):
        images = pipe(PROMPTS, **kwargs).images
    assert torch.isfinite(images).all()
    assert not [r for r in caplog.records if "not DALLE2-pytorch's sampler" in r.getMessage()]


def test_guided_unconditional_half_is_not_encoded(port_folder):
    """Under guidance the unconditional rows repeat the conditional ones (the ports swap in their null tokens)."""
    pipe = UnCLIPPipeline.from_pretrained(port_folder)
    text = pipe.encode_prompt(PROMPTS, torch.device("cpu"), 1, True)
    assert text.guided and torch.equal(text.hidden_states[:2], text.hidden_states[2:])


def test_identity_text_proj():
    proj = UnCLIPIdentityTextProjModel(clip_embeddings_dim=4)
    image, hidden = torch.randn(2, 4), torch.randn(4, 3, 5)
    context, embeds = proj(image_embeddings=image, prompt_embeds=torch.randn(4, 4), text_encoder_hidden_states=hidden,
                           do_classifier_free_guidance=True)
    assert context is hidden and torch.equal(embeds, torch.cat([image, image]))
    assert proj.clip_extra_context_tokens == 0
    with pytest.raises(ValueError, match="4 \\(`clip_embeddings_dim`\\)"):
        proj(image_embeddings=torch.randn(2, 3), prompt_embeds=None, text_encoder_hidden_states=hidden,
             do_classifier_free_guidance=True)
    with pytest.raises(ValueError, match="one image embedding per prompt"):
        proj(image_embeddings=image, prompt_embeds=None, text_encoder_hidden_states=hidden,
             do_classifier_free_guidance=False)


def test_upscale_modes():
    image = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert torch.equal(upscale(image, (4, 4), mode="nearest"), image.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert torch.equal(upscale(image, (4, 4)), upscale(image, (4, 4), mode="bicubic"))
    with pytest.raises(ValueError, match="unknown resize mode"):
        upscale(image, (4, 4), mode="bilinear")
    with pytest.raises(ValueError, match="lowres_resample"):
        Dalle2UNet(dim=8, dim_mults=(1,), lowres_resample="bilinear")


# --------------------------------------------------------------------------------------------------------------------
# refusals


def test_negative_prompt_and_caption_only_are_refused(port_folder):
    pipe = UnCLIPPipeline.from_pretrained(port_folder)
    with pytest.raises(ValueError, match="negative_prompt` cannot be used with DALLE2-pytorch ports"):
        pipe(PROMPTS, negative_prompt=["x", "y"], prior_num_inference_steps=1, decoder_num_inference_steps=1)
    with pytest.raises(ValueError, match="caption_only"):
        pipe(PROMPTS, conditioning="caption_only", prior_num_inference_steps=1, decoder_num_inference_steps=1)


def test_port_decoder_with_karlo_text_proj_is_refused(port_folder):
    pipe = UnCLIPPipeline.from_pretrained(port_folder)
    karlo_proj = UnCLIPTextProjModel(clip_embeddings_dim=32, time_embed_dim=16, cross_attention_dim=16)
    pipe = UnCLIPPipeline(**{**pipe.components, "text_proj": karlo_proj})
    with pytest.raises(ValueError, match="must pass them through"):
        pipe(PROMPTS, prior_num_inference_steps=1, decoder_num_inference_steps=1)


def test_self_conditioned_decoder_runs_and_needs_x0_from_its_scheduler(tmp_path, clip_folder):
    """Self-conditioning is sampled (parity: test_dalle2_sampling.py); a scheduler whose step output has no
    ``pred_original_sample`` (DPM-Solver) cannot feed it and is refused."""
    from diffusers import DPMSolverMultistepScheduler

    prior, decoder = _write_port_files(tmp_path, {"self_cond": True})
    convert_dalle2_pipeline(prior, decoder, clip_folder, tmp_path / "out", image_sizes=(8,))
    pipe = UnCLIPPipeline.from_pretrained(tmp_path / "out")
    assert pipe.decoder.config.self_cond
    images = pipe(PROMPTS, prior_num_inference_steps=2, decoder_num_inference_steps=2, output_type="pt").images
    assert torch.isfinite(images).all()
    pipe.decoder_scheduler = DPMSolverMultistepScheduler.from_config(pipe.decoder_scheduler.config)
    with pytest.raises(ValueError, match="carries no `pred_original_sample`"):
        pipe(PROMPTS, prior_num_inference_steps=1, decoder_num_inference_steps=2)


def test_noise_conditioned_upsampler_runs(port_folder):
    """Imagen-style noise conditioning (parity: test_dalle2_sampling.py): the low-res image is noised to the
    U-Net's ``lowres_noise_sample_level`` and that level passed."""
    pipe = UnCLIPPipeline.from_pretrained(port_folder)
    upsampler = Dalle2UNet(dim=8, dim_mults=(1, 2), lowres_cond=True, attn_heads=2, attn_dim_head=8, sample_size=16,
                           lowres_noise_cond=True, lowres_noise_sample_level=0.5)
    pipe = UnCLIPPipeline(**{**pipe.components, "super_res_first": upsampler,
                             "super_res_scheduler": UnCLIPScheduler(num_train_timesteps=50)})
    out = pipe(PROMPTS, prior_num_inference_steps=1, decoder_num_inference_steps=1, super_res_num_inference_steps=2,
               output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 3, 16, 16) and torch.isfinite(out.images).all()
    with pytest.raises(ValueError, match="lowres_noise_sample_level"):
        Dalle2UNet(dim=8, dim_mults=(1,), lowres_noise_sample_level=1.0)


def test_inversion_through_self_or_noise_conditioned_ports_is_refused(port_folder, tmp_path, clip_folder):
    """DDIM inversion does not reproduce a sampler that feeds back x_0 or noises its low-res input: refused."""
    from unclip_pipelines import UnCLIPImageVariationPipeline

    def variation(pipe):
        parts = {k: v for k, v in pipe.components.items() if k not in ("prior", "prior_scheduler")}
        return UnCLIPImageVariationPipeline(**{"image_encoder": None, "feature_extractor": None, **parts})

    pipe = UnCLIPPipeline.from_pretrained(port_folder)
    upsampler = Dalle2UNet(dim=8, dim_mults=(1, 2), lowres_cond=True, attn_heads=2, attn_dim_head=8, sample_size=16,
                           lowres_noise_cond=True)
    noisy = variation(UnCLIPPipeline(**{**pipe.components, "super_res_first": upsampler,
                                        "super_res_scheduler": UnCLIPScheduler(num_train_timesteps=50)}))
    image, embeds = torch.rand(1, 3, 16, 16), torch.randn(1, 32)
    settings = {"image_embeddings": embeds, "decoder_num_inference_steps": 2, "super_res_num_inference_steps": 2,
                "fixed_point_iterations": 0}
    with pytest.raises(ValueError, match="super-resolution stage 1 is a self-conditioned or noise-conditioned"):
        noisy.invert(image, **settings)
    assert noisy.invert(image, invert_super_res=False, **settings).super_res_latents is None

    prior, decoder = _write_port_files(tmp_path, {"self_cond": True})
    convert_dalle2_pipeline(prior, decoder, clip_folder, tmp_path / "out", image_sizes=(8,))
    with pytest.raises(ValueError, match="decoder is a self-conditioned"):
        variation(UnCLIPPipeline.from_pretrained(tmp_path / "out")).invert(image, **settings)


def test_ports_with_ddim_eta_and_inpainting(port_folder):
    """The Karlo-side features on a port folder: DDIM-η decoding and RePaint inpainting (unmasked pixels kept)."""
    from unclip_pipelines import UnCLIPInpaintPipeline

    pipe = UnCLIPPipeline.from_pretrained(port_folder)
    steps = {"prior_num_inference_steps": 2, "decoder_num_inference_steps": 3, "output_type": "pt"}
    runs = [pipe(PROMPTS, decoder_eta=eta, generator=torch.Generator().manual_seed(seed), **steps).images
            for eta, seed in ((0.0, 0), (0.0, 0), (1.0, 0))]
    assert runs[0].shape == (2, 3, 8, 8) and torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])

    inpaint = UnCLIPInpaintPipeline(**pipe.components)
    image, mask = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.zeros(2, 1, 8, 8)
    mask[..., 2:6, 3:7] = 1
    out = inpaint(PROMPTS, image, mask, generator=torch.Generator().manual_seed(0), **steps).images
    kept = mask.expand_as(out) == 0
    assert (out - image).abs()[kept].max() <= 1 / 255
    assert (out - image).abs()[~kept].mean() > 1 / 255


def test_upsampler_with_last_model_is_refused(port_folder):
    pipe = UnCLIPPipeline.from_pretrained(port_folder)
    kwargs = {"dim": 8, "dim_mults": (1, 2), "lowres_cond": True, "attn_heads": 2, "attn_dim_head": 8,
              "sample_size": 16}
    pipe = UnCLIPPipeline(**{**pipe.components, "super_res_first": Dalle2UNet(**kwargs),
                             "super_res_scheduler": UnCLIPScheduler(num_train_timesteps=50),
                             "super_res_last": Dalle2UNet(**kwargs)})
    with pytest.raises(ValueError, match="takes no `super_res_\\*_last`"):
        pipe(PROMPTS, prior_num_inference_steps=1, decoder_num_inference_steps=1, super_res_num_inference_steps=1)


def test_text_encoder_that_does_not_fit_is_refused(tmp_path):
    prior, decoder = _write_port_files(tmp_path)
    clip = write_tiny_clip(str(tmp_path / "clip16"), text_ctx=8, clip_dim=16)
    with pytest.raises(ConversionError, match="projection_dim=16"):
        convert_dalle2_pipeline(prior, decoder, clip, tmp_path / "out")
    with pytest.raises(ConversionError, match="is not a folder"):
        convert_dalle2_pipeline(prior, decoder, tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_upsamplers_with_different_schedules_are_refused(tmp_path, clip_folder):
    torch.manual_seed(0)
    state = decoder_state_dict(text_embed_dim=32)
    for u, schedule in ((1, "cosine"), (2, "linear")):
        sr = Dalle2UNet(dim=8, dim_mults=(1, 2), lowres_cond=True, attn_heads=2, attn_dim_head=8)
        state.update({f"unets.{u}.{k}": v for k, v in sr.state_dict().items()})
        state.update(noise_scheduler_buffers(f"noise_schedulers.{u}.", schedule))
    torch.save({"model": state, "version": "1.15.6"}, tmp_path / "decoder.pth")
    torch.save({"model": prior_state_dict(), "version": "1.15.6"}, tmp_path / "prior.pth")
    with pytest.raises(ConversionError, match="different noise schedules or samplers"):
        convert_dalle2_pipeline(tmp_path / "prior.pth", tmp_path / "decoder.pth", clip_folder, tmp_path / "out",
                                image_sizes=(8, 16, 32))


def test_cli_pipeline_mode(tmp_path, clip_folder, capsys):
    prior, decoder = _write_port_files(tmp_path)
    config = tmp_path / "prior_config.json"
    config.write_text(json.dumps({"prior": {"sample_timesteps": 10}}))
    code = cli_main(["--prior_checkpoint_path", str(prior), "--decoder_checkpoint_path", str(decoder),
                     "--text_encoder_path", clip_folder, "--prior_config", str(config), "--image_sizes", "8",
                     "--dump_path", str(tmp_path / "out")])
    summary = capsys.readouterr().out
    assert code == 0
    assert "wrote UnCLIPPipeline (7 components" in summary
    assert "sample_timesteps=10 < 50 training steps" in summary and "written as Dalle2DDIMScheduler" in summary
    assert "prior_scheduler: Dalle2DDIMScheduler squaredcos_cap_v2, 50 training steps" in summary
    defaults = json.loads((tmp_path / "out" / "sampling_defaults.json").read_text())
    assert defaults["prior_num_inference_steps"] == 10 and defaults["decoder_num_inference_steps"] == 50
    pipe = UnCLIPPipeline.from_pretrained(tmp_path / "out")
    assert isinstance(pipe.prior_scheduler, Dalle2DDIMScheduler)
    assert isinstance(pipe.decoder_scheduler, UnCLIPScheduler)

    bad = cli_main(["--prior_checkpoint_path", str(prior), "--decoder_checkpoint_path", str(decoder),
                    "--text_encoder_path", str(tmp_path / "nope"), "--dump_path", str(tmp_path / "o2")])
    assert bad == 1 and "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint_path", "a.pth", "--prior_checkpoint_path", "p.pth"], "cannot be combined"),
        (["--prior_checkpoint_path", "p.pth", "--decoder_checkpoint_path", "d.pth"], "also needs --text_encoder_path"),
        ([], "give --checkpoint_path"),
        (["--prior_checkpoint_path", "p", "--decoder_checkpoint_path", "d", "--text_encoder_path", "c",
          "--config", "x.json"], "--config apply to --checkpoint_path"),
    ],
)
def test_cli_mode_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*argv, "--dump_path", "out"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
