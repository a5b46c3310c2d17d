"""The DALLE2-pytorch converter's loading, version detection, summary and every refusal path (no DALLE2-pytorch needed)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from unclip_pipelines.conversion import ConversionError
from unclip_pipelines.conversion.dalle2 import (
    beta_schedule_betas,
    convert_dalle2_decoder,
    convert_dalle2_prior,
    convert_dalle2_to_diffusers,
    detect_beta_schedule,
    select_state_dict,
)
from unclip_pipelines.conversion.dalle2.cli import main as cli_main
from unclip_pipelines.conversion.dalle2.versions import decoder_semantics, parse_version, prior_semantics
from unclip_pipelines.models.dalle2 import Dalle2PriorNetwork, Dalle2UNet
from unclip_pipelines.schedulers import UnCLIPScheduler

from .dalle2_fixtures import decoder_state_dict, noise_scheduler_buffers, prior_state_dict


@pytest.fixture(scope="module")
def prior_sd():
    return prior_state_dict()


@pytest.fixture(scope="module")
def decoder_sd():
    return decoder_state_dict()


def _save(tmp_path, obj, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


# ---------------------------------------------------------------------------------------------------- happy paths


def test_prior_round_trip_through_the_cli(tmp_path, prior_sd, capsys):
    path = _save(tmp_path, {"model": prior_sd, "version": "1.15.6", "ema_model": prior_sd})
    assert cli_main(["--checkpoint_path", str(path), "--dump_path", str(tmp_path / "out")]) == 0
    summary = capsys.readouterr().out
    assert "weights: 'ema_model'" in summary and "release 1.15.6" in summary
    assert "NOT inferable" in summary and "heads = 4" in summary
    weights = load_file(tmp_path / "out" / "prior" / "diffusion_pytorch_model.safetensors")
    assert torch.equal(weights["learned_query"], prior_sd["net.learned_query"])
    prior = Dalle2PriorNetwork.from_pretrained(tmp_path / "out" / "prior")
    assert prior.config.heads == 4 and prior.config.source_version == "1.15.6"
    scheduler = UnCLIPScheduler.from_pretrained(tmp_path / "out" / "prior_scheduler")
    assert scheduler.config.prediction_type == "sample" and scheduler.config.num_train_timesteps == 50
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2" and not scheduler.config.clip_sample


def test_prior_forward_matches_the_weights_it_was_made_from(prior_sd):
    torch.manual_seed(0)
    reference = Dalle2PriorNetwork(
        embedding_dim=32, depth=2, dim_head=16, heads=4, num_timesteps=50, max_text_len=8
    ).eval()
    reference.load_state_dict({k[4:]: v for k, v in prior_sd.items() if k.startswith("net.")})
    model, _, _ = convert_dalle2_prior(prior_sd, source_version="1.15.6")
    x, text = torch.randn(2, 32), torch.randn(2, 32)
    enc = torch.randn(2, 5, 32)
    with torch.no_grad():
        a = reference(x, 7, proj_embedding=text, encoder_hidden_states=enc).predicted_image_embedding
        b = model(x, 7, proj_embedding=text, encoder_hidden_states=enc).predicted_image_embedding
    assert torch.equal(a, b)


def test_decoder_cli_writes_pipeline_named_stages(tmp_path, capsys):
    state = decoder_state_dict()
    second = decoder_state_dict(
        seed=1, image_embed_dim=None, cond_on_image_embeds=False, cond_on_text_encodings=False, lowres_cond=True,
        text_embed_dim=None, out_channels=3, self_attn=False,
    )
    for key, value in second.items():
        state[key.replace("unets.0.", "unets.1.").replace("noise_schedulers.0.", "noise_schedulers.1.")] = value
    state.update(noise_scheduler_buffers("noise_schedulers.1.", "linear"))
    path = _save(tmp_path, {"model": state, "version": "1.15.6"})
    code = cli_main(["--checkpoint_path", str(path), "--dump_path", str(tmp_path / "out"), "--image_sizes", "16", "32"])
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "decoder", "decoder_scheduler", "super_res_first", "super_res_scheduler"
    }
    decoder = Dalle2UNet.from_pretrained(tmp_path / "out" / "decoder")
    assert decoder.config.sample_size == 16 and decoder.config.out_channels == 6
    sr = Dalle2UNet.from_pretrained(tmp_path / "out" / "super_res_first")
    assert sr.config.lowres_cond and sr.config.sample_size == 32
    assert UnCLIPScheduler.from_pretrained(tmp_path / "out" / "decoder_scheduler").config.variance_type == "learned_range"
    sr_sched = UnCLIPScheduler.from_pretrained(tmp_path / "out" / "super_res_scheduler").config
    assert sr_sched.beta_schedule == "linear" and sr_sched.beta_start == pytest.approx(0.002)
    # the upsampler runs the way the pipelines' super-resolution stage calls it: [noisy, low-res] channels
    with torch.no_grad():
        out = sr(torch.randn(1, 6, 32, 32), 3).sample
    assert out.shape == (1, 3, 32, 32)


def test_decoder_ema_unets_are_taken_from_a_trainer_checkpoint(decoder_sd):
    ema = {f"0.ema_model.{k[len('unets.0.'):]}": v + 1 for k, v in decoder_sd.items() if k.startswith("unets.0.")}
    ema["0.initted"], ema["0.step"] = torch.tensor(True), torch.tensor(3)
    container = {"model": decoder_sd, "ema": ema, "version": "1.15.6", "steps": torch.tensor([3])}
    state, kind, entry = select_state_dict(container)
    assert (kind, entry) == ("decoder", "ema")
    assert torch.equal(state["unets.0.to_out.bias"], decoder_sd["unets.0.to_out.bias"] + 1)
    assert "noise_schedulers.0.betas" in state
    state, _, entry = select_state_dict(container, "model")
    assert entry == "model" and torch.equal(state["unets.0.to_out.bias"], decoder_sd["unets.0.to_out.bias"])


def test_prior_ema_state_dict_entry(prior_sd):
    ema = {f"ema_model.{k}": v for k, v in prior_sd.items()}
    ema.update({f"online_model.{k}": v for k, v in prior_sd.items()})
    state, kind, entry = select_state_dict({"model": prior_sd, "ema": ema})
    assert (kind, entry) == ("prior", "ema") and set(state) == set(prior_sd)


def test_clip_keys_are_dropped_with_a_note(prior_sd):
    state = {**prior_sd, "clip.clip.visual.proj": torch.zeros(2, 2)}
    _, _, notes = convert_dalle2_prior(state, source_version="1.15.6")
    assert any("clip.*" in note for note in notes)


@pytest.mark.parametrize("name", ["cosine", "linear", "quadratic", "sigmoid", "jsd"])
def test_beta_schedules_are_recognised(name):
    assert detect_beta_schedule(beta_schedule_betas(name, 40).float(), "x") == (name, 40)


def test_version_table():
    assert parse_version("v0.15.4") == (0, 15, 4) and parse_version("1.15.6") == (1, 15, 6)
    assert prior_semantics("0.15.4").layer_norm_type == "functional"
    assert prior_semantics("0.20.1").layer_norm_stable == "all"
    assert prior_semantics("1.1.0").attention_type == "pb_relax" and prior_semantics("1.1.0").pb_relax_alpha == 128
    assert prior_semantics("1.8.4").null_conditioning == "ignored"
    assert prior_semantics("1.10.0").null_conditioning == "null_embeddings_keep_text_embed"
    assert prior_semantics("1.12.0").self_cond_layout == "replaces_query"
    assert decoder_semantics("1.1.0").linear_attention_value_norm == "none"
    assert decoder_semantics("1.13.0").key_layout == "cross_attn_fn"
    assert not decoder_semantics("0.15.4").lowres_cond_at_output


# ---------------------------------------------------------------------------------------------------- refusals


def test_unexpected_key_is_listed(prior_sd):
    state = {**prior_sd, "net.causal_transformer.layers.0.0.extra.weight": torch.zeros(2)}
    with pytest.raises(ConversionError, match=r"unexpected key.*\n.*layers\.0\.0\.extra\.weight"):
        convert_dalle2_prior(state, source_version="1.15.6")


def test_missing_key_is_listed(prior_sd):
    state = dict(prior_sd)
    del state["net.causal_transformer.layers.1.0.to_kv.weight"]
    with pytest.raises(ConversionError, match=r"missing key.*\n.*layers\.1\.0\.to_kv\.weight"):
        convert_dalle2_prior(state, source_version="1.15.6")


def test_unexpected_top_level_key(prior_sd):
    with pytest.raises(ConversionError, match="outside net"):
        convert_dalle2_prior({**prior_sd, "vaes.0.x": torch.zeros(1)}, source_version="1.15.6")


def test_shape_mismatch_names_the_switch(prior_sd):
    state = dict(prior_sd)
    state["net.causal_transformer.layers.1.0.to_q.weight"] = torch.zeros(96, 32)
    with pytest.raises(ConversionError, match=r"to_q\.weight: shape \(96, 32\), expected \(64, 32\) from heads=4 × dim_head=16"):
        convert_dalle2_prior(state, source_version="1.15.6")


@pytest.mark.parametrize(("key", "value", "found"), [("depth", 12, 2), ("heads", 12, 4), ("dim", 768, 32)])
def test_config_contradicting_the_weights_is_refused(prior_sd, key, value, found):
    with pytest.raises(ConversionError, match=rf"net\.{key}={value} but the weights have {found}.*#282"):
        convert_dalle2_prior(prior_sd, source_version="1.15.6", config={"prior": {"net": {key: value}}})


def test_decoder_config_for_a_prior_is_refused(prior_sd):
    with pytest.raises(ConversionError, match="config is for a decoder"):
        convert_dalle2_prior(prior_sd, source_version="1.15.6", config={"decoder": {"unets": []}})


class PickledVersion:
    """Stands in for the packaging.version.Version object a DALLE2-pytorch trainer pickles."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def test_pickled_objects_need_allow_pickle(tmp_path, prior_sd):
    path = _save(tmp_path, {"model": prior_sd, "version": PickledVersion("1.15.6")})
    with pytest.raises(ConversionError, match="--allow-pickle"):
        convert_dalle2_to_diffusers(path)
    with pytest.warns(UserWarning, match="arbitrary code"):
        result = convert_dalle2_to_diffusers(path, allow_pickle=True)
    assert result.source_version == "1.15.6" and result.entry == "model"


def test_missing_file_and_non_checkpoints(tmp_path):
    with pytest.raises(ConversionError, match="does not exist"):
        convert_dalle2_to_diffusers(tmp_path / "nope.pth")
    with pytest.raises(ConversionError, match="Not a DALLE2-pytorch checkpoint"):
        convert_dalle2_to_diffusers(_save(tmp_path, {"state_dict": {"a": torch.zeros(1)}}))
    with pytest.raises(ConversionError, match="not a DALLE2-pytorch checkpoint"):
        convert_dalle2_to_diffusers(_save(tmp_path, [torch.zeros(1)], "list.pth"))


def test_kind_and_weights_flags_are_checked(tmp_path, prior_sd):
    path = _save(tmp_path, {"model": prior_sd, "version": "1.15.6"})
    with pytest.raises(ConversionError, match="--kind decoder given, but the checkpoint holds a prior"):
        convert_dalle2_to_diffusers(path, kind="decoder")
    with pytest.raises(ConversionError, match="no EMA weights"):
        convert_dalle2_to_diffusers(path, weights="ema")
    with pytest.raises(ConversionError, match="bare state dict"):
        convert_dalle2_to_diffusers(_save(tmp_path, prior_sd, "bare.pth"), weights="ema")


def test_bare_state_dict_assumes_the_layout_release(tmp_path, prior_sd):
    result = convert_dalle2_to_diffusers(_save(tmp_path, prior_sd, "bare.pth"))
    assert result.entry == "state dict" and result.source_version == "1.15.6"
    assert any("assumed" in note for note in result.notes)


def test_ambiguous_layout_needs_a_version(prior_sd):
    state = {k.replace("net.null_text_encodings", "net.null_text_embed"): v for k, v in prior_sd.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("net.null_text_embeds", "net.null_image_embed"))}
    with pytest.raises(ConversionError, match=r"no DALLE2-pytorch version.*0\.23\.0 - 1\.8\.x.*--source_version"):
        convert_dalle2_prior(state)
    model, _, _ = convert_dalle2_prior(state, source_version="1.8.4")
    assert model.config.null_conditioning == "ignored" and model.config.attention_type == "cosine_sim"


def test_version_contradicting_the_layout_or_the_flag(prior_sd):
    with pytest.raises(ConversionError, match="does not match DALLE2-pytorch 1.1.0"):
        convert_dalle2_prior(prior_sd, source_version="1.1.0")
    with pytest.raises(ConversionError, match="contradicts the version 1.15.6"):
        convert_dalle2_prior(prior_sd, version="1.15.6", source_version="1.12.0")


@pytest.mark.parametrize(("version", "match"), [("0.22.1", "0.21.x / 0.22.x"), ("0.10.0", "older"), ("2.0.0", "newer")])
def test_unsupported_prior_releases(prior_sd, version, match):
    with pytest.raises(ConversionError, match=match):
        convert_dalle2_prior(prior_sd, source_version=version)


def test_unsupported_decoder_release(decoder_sd):
    with pytest.raises(ConversionError, match="between 0.16.0 and 1.0.x"):
        convert_dalle2_decoder(decoder_sd, source_version="0.20.0")


def test_unrunnable_noise_schedule_or_prediction_is_refused():
    # jsd's last beta is 1 (ᾱ = 0 at the first sampling step): a noise-predicting model cannot be sampled from it
    with pytest.raises(ConversionError, match=r"noise prediction with the 'jsd' schedule.*Nothing was written"):
        convert_dalle2_prior(
            prior_state_dict(schedule="jsd"), source_version="1.15.6", config={"prior": {"predict_x_start": False}}
        )
    with pytest.raises(ConversionError, match=r"noise prediction with the 'quadratic' schedule of 20 steps"):
        convert_dalle2_decoder(_decoder_with_schedule("quadratic", 20), source_version="1.15.6")
    # below 20 steps, DALLE2-pytorch's 1000 / T scaling pushes the ranged schedules' betas past 1
    with pytest.raises(ConversionError, match=r"'linear' schedule with 10 steps has betas up to 2 > 1"):
        convert_dalle2_prior(prior_state_dict(schedule="linear", num_timesteps=10), source_version="1.15.6")
    with pytest.raises(ConversionError, match="none of DALLE2-pytorch's"):
        state = prior_state_dict()
        state["noise_scheduler.betas"] = torch.full((50,), 0.01)
        convert_dalle2_prior(state, source_version="1.15.6")
    state = prior_state_dict()
    del state["noise_scheduler.betas"]
    with pytest.raises(ConversionError, match="missing key noise_scheduler.betas"):
        convert_dalle2_prior(state, source_version="1.15.6")


def _decoder_with_schedule(schedule, timesteps=50):
    state = {k: v for k, v in decoder_state_dict().items() if not k.startswith("noise_schedulers.")}
    state.update(noise_scheduler_buffers("noise_schedulers.0.", schedule, timesteps))
    return state


def _scheduler(config):
    return UnCLIPScheduler.from_config({k: v for k, v in config.items() if k != "_class_name"})


@pytest.mark.parametrize("schedule", ["quadratic", "sigmoid", "jsd"])
@pytest.mark.parametrize("predict_x_start", [True, False])
def test_prior_v_prediction_and_dalle2_schedules_convert(schedule, predict_x_start):
    state = prior_state_dict(schedule=schedule)
    config = {"prior": {"predict_v": True, "predict_x_start": predict_x_start, "beta_schedule": schedule}}
    _, sched, notes = convert_dalle2_prior(state, source_version="1.15.6", config=config)
    assert sched["beta_schedule"] == schedule and sched["prediction_type"] == "v_prediction"
    # DiffusionPrior clamps x_0 to ±1 only without predict_x_start, which predict_v leaves in force
    assert sched["clip_sample"] is (not predict_x_start) and sched["clip_sample_range"] == 1.0
    assert any(f"noise schedule: {schedule}, 50 steps" in note for note in notes)
    scheduler = _scheduler(sched)
    assert torch.equal(scheduler.betas, state["noise_scheduler.betas"])
    assert torch.allclose(scheduler.alphas_cumprod, state["noise_scheduler.alphas_cumprod"], rtol=1e-5, atol=0)


@pytest.mark.parametrize("schedule", ["quadratic", "sigmoid", "jsd"])
def test_decoder_v_prediction_and_dalle2_schedules_convert(tmp_path, schedule):
    state = _decoder_with_schedule(schedule)
    path = _save(tmp_path, {"model": state, "version": "1.15.6"})
    result = convert_dalle2_to_diffusers(path, tmp_path / "out", config={"decoder": {"predict_v": True}})
    assert any(f"noise schedule: {schedule}, 50 steps; prediction: v_prediction" in n for n in result.notes)
    scheduler = UnCLIPScheduler.from_pretrained(tmp_path / "out" / "decoder_scheduler")
    assert scheduler.config.beta_schedule == schedule and scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.clip_sample and scheduler.config.variance_type == "learned_range"
    assert torch.equal(scheduler.betas, state["noise_schedulers.0.betas"])


def test_ranged_schedules_use_dalle2_pytorchs_own_rounding():
    # (1000 / T) * 0.0001 and * 0.02, as DALLE2-pytorch computes them, differ from 0.0001 * 1000 / T (or
    # 0.02 * 1000 / T) in the last bit for T = 21
    assert (1000 / 21) * 0.0001 != 0.0001 * 1000 / 21 or (1000 / 21) * 0.02 != 0.02 * 1000 / 21
    state = prior_state_dict(schedule="quadratic", num_timesteps=21)
    _, sched, _ = convert_dalle2_prior(state, source_version="1.15.6")
    assert (sched["beta_start"], sched["beta_end"]) == ((1000 / 21) * 0.0001, (1000 / 21) * 0.02)
    assert torch.equal(_scheduler(sched).betas, beta_schedule_betas("quadratic", 21).float())


def test_l2norm_clamps_only_act_with_predict_x_start(prior_sd):
    config = {"prior": {"predict_x_start": False, "sampling_clamp_l2norm": True, "sampling_final_clamp_l2norm": True}}
    model, sched, notes = convert_dalle2_prior(prior_sd, source_version="1.15.6", config=config)
    assert sched["prediction_type"] == "epsilon" and not model.config.final_l2norm
    assert any("sampling_final_clamp_l2norm ignored" in note for note in notes)
    model, _, _ = convert_dalle2_prior(
        prior_sd, source_version="1.15.6", config={"prior": {"predict_v": True, "sampling_final_clamp_l2norm": True}}
    )
    assert model.config.final_l2norm


def test_sampling_options_without_a_scheduler_counterpart_are_refused(prior_sd, decoder_sd):
    with pytest.raises(ConversionError, match="sampling_clamp_l2norm"):
        convert_dalle2_prior(prior_sd, source_version="1.15.6", config={"prior": {"sampling_clamp_l2norm": True}})
    with pytest.raises(ConversionError, match="dynamic thresholding"):
        convert_dalle2_decoder(decoder_sd, source_version="1.15.6", config={"decoder": {"use_dynamic_thres": True}})
    with pytest.raises(ConversionError, match="learned_variance_constrain_frac"):
        config = {"decoder": {"predict_v": True, "learned_variance_constrain_frac": True}}
        convert_dalle2_decoder(decoder_sd, source_version="1.15.6", config=config)
    with pytest.raises(ConversionError, match="sampling_clamp_l2norm"):  # predict_v leaves predict_x_start=True
        config = {"prior": {"predict_v": True, "sampling_clamp_l2norm": True}}
        convert_dalle2_prior(prior_sd, source_version="1.15.6", config=config)


def test_self_conditioning_needs_a_known_release(prior_sd):
    with pytest.raises(ConversionError, match="self-conditioning changed layout"):
        convert_dalle2_prior(prior_sd, config={"prior": {"net": {"self_cond": True}}})
    with pytest.raises(ConversionError, match="had no self-conditioning"):
        state = {k: v for k, v in prior_sd.items() if not k.startswith(("net.null_text_embeds", "net.null_image_embed"))}
        state = {k.replace("net.null_text_encodings", "net.null_text_embed"): v for k, v in state.items()}
        convert_dalle2_prior(state, source_version="1.1.0", config={"prior": {"net": {"self_cond": True}}})


def test_decoder_refusals(decoder_sd):
    with pytest.raises(ConversionError, match="VQGAN-VAE"):
        convert_dalle2_decoder({**decoder_sd, "vaes.0.enc.weight": torch.zeros(1)}, source_version="1.15.6")
    with pytest.raises(ConversionError, match="combine_upsample_fmaps"):
        convert_dalle2_decoder(
            {**decoder_sd, "unets.0.upsample_combiner.fmap_convs.0.project.weight": torch.zeros(1)},
            source_version="1.15.6",
        )
    state = {k: v for k, v in decoder_sd.items() if not k.startswith("unets.0.image_to_tokens")}
    with pytest.raises(ConversionError, match="image_embed_dim == cond_dim"):
        convert_dalle2_decoder(state, source_version="1.15.6")
    with pytest.raises(ConversionError, match=r"unets\[0\]\.dim_mults=\[1, 2, 4\] but the weights have \(1, 2\)"):
        convert_dalle2_decoder(decoder_sd, source_version="1.15.6", config={"decoder": {"unets": [{"dim_mults": [1, 2, 4]}]}})
    with pytest.raises(ConversionError, match="config describes 2 unets"):
        convert_dalle2_decoder(decoder_sd, source_version="1.15.6", config={"decoder": {"unets": [{}, {}]}})
    with pytest.raises(ConversionError, match="learned_variance=False"):
        convert_dalle2_decoder(decoder_sd, source_version="1.15.6", config={"decoder": {"learned_variance": False}})
    with pytest.raises(ConversionError, match="cosine_sim_self_attn did not exist"):
        convert_dalle2_decoder(
            {k.replace(".cross_attn.", ".cross_attn.fn."): v for k, v in decoder_sd.items()},
            source_version="1.2.0",
            config={"decoder": {"unets": [{"cosine_sim_self_attn": True}]}},
        )
    bad = {**decoder_sd, "unets.0.downs.1.2.0.cross_attn.to_kv.weight": torch.zeros(1024, 32)}
    with pytest.raises(ConversionError, match=r"to_kv\.weight: shape \(1024, 32\), expected \(1024, 24\) from cond_dim=24"):
        convert_dalle2_decoder(bad, source_version="1.15.6")


def test_cli_reports_errors(tmp_path, capsys):
    assert cli_main(["--checkpoint_path", str(tmp_path / "missing.pth"), "--dump_path", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_config_file_is_read(tmp_path, prior_sd):
    config = tmp_path / "prior_config.json"
    config.write_text(json.dumps({"prior": {"net": {"dim": 32, "depth": 2}, "image_embed_scale": 2.0}}))
    result = convert_dalle2_to_diffusers(_save(tmp_path, {"model": prior_sd, "version": "1.15.6"}), config=config)
    assert result.models["prior"].config.image_embed_scale == 2.0
    assert "config: the --config file" in result.notes[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConversionError, match="not valid JSON"):
        convert_dalle2_to_diffusers(_save(tmp_path, {"model": prior_sd}), config=bad)
    assert os.path.exists(config)


# ------------------------------------------------------------------------------------- sample_timesteps: DDIM stages


def test_sample_timesteps_below_the_training_steps_write_dalle2_ddim_schedulers(tmp_path, prior_sd, decoder_sd, capsys):
    """Prior: DiffusionPrior's DDIM (eta 1, alphas_cumprod_prev); decoder: Decoder's (its ddim_sampling_eta)."""
    from unclip_pipelines.schedulers import Dalle2DDIMScheduler

    prior = _save(tmp_path, {"model": prior_sd, "version": "1.15.6"}, "prior.pth")
    config = tmp_path / "prior.json"
    config.write_text(json.dumps({"prior": {"sample_timesteps": 8}}))
    assert cli_main(["--checkpoint_path", str(prior), "--config", str(config), "--dump_path", str(tmp_path / "p")]) == 0
    summary = capsys.readouterr().out
    assert "prior_scheduler: Dalle2DDIMScheduler squaredcos_cap_v2, 50 training steps, sample" in summary
    assert "samples with DALLE2-pytorch's prior DDIM in 8 steps, eta=1.0, alphas_cumprod_prev" in summary
    assert "eta=1.0 from DiffusionPrior's DDIM" in summary
    scheduler = Dalle2DDIMScheduler.from_pretrained(tmp_path / "p" / "prior_scheduler")
    assert scheduler.config.timestep_spacing == "prior" and scheduler.config.alphas_cumprod_table == "alphas_cumprod_prev"
    assert scheduler.config.prediction_type == "sample" and not scheduler.config.clip_sample
    assert scheduler.config.eta == 1.0

    decoder = _save(tmp_path, {"model": decoder_sd, "version": "1.15.6"}, "decoder.pth")
    config = {"decoder": {"sample_timesteps": 12, "ddim_sampling_eta": 0.25}}
    result = convert_dalle2_to_diffusers(decoder, tmp_path / "d", config=config)
    assert result.sampling_steps == {"decoder_scheduler": 12}
    scheduler = Dalle2DDIMScheduler.from_pretrained(tmp_path / "d" / "decoder_scheduler")
    assert scheduler.config.timestep_spacing == "decoder" and scheduler.config.alphas_cumprod_table == "alphas_cumprod"
    assert scheduler.config.eta == 0.25 and scheduler.config.clip_sample and scheduler.config.clip_sample_range == 1.0
    assert scheduler.config.prediction_type == "epsilon" and "variance_type" not in scheduler.config

    # all training steps (or none given): DALLE2-pytorch's DDPM, UnCLIPScheduler as before
    result = convert_dalle2_to_diffusers(decoder, tmp_path / "e", config={"decoder": {"sample_timesteps": 50}})
    assert result.schedulers["decoder_scheduler"]["_class_name"] == "UnCLIPScheduler"
    assert result.sampling_steps == {"decoder_scheduler": 50}
    assert "DALLE2-pytorch's DDPM in all 50 steps, learned_range" in result.summary()
    assert UnCLIPScheduler.from_pretrained(tmp_path / "e" / "decoder_scheduler").config.variance_type == "learned_range"


def test_older_releases_keep_ddpm_with_a_note(tmp_path, prior_sd):
    """Releases before 1.12.3 had other DDIM samplers (grid, table, noise of epsilon models, default eta)."""
    path = _save(tmp_path, {"model": prior_sd, "version": "1.11.0"})
    result = convert_dalle2_to_diffusers(path, tmp_path / "out", config={"prior": {"sample_timesteps": 8}})
    assert result.schedulers["prior_scheduler"]["_class_name"] == "UnCLIPScheduler"
    assert result.sampling_steps == {"prior_scheduler": 50}
    assert any("DDIM sampler of DALLE2-pytorch 1.11.0, which differs" in note for note in result.notes)


@pytest.mark.parametrize(
    "kind, section, message",
    [
        ("prior", {"sample_timesteps": 1}, "at least 2 with timestep_spacing='prior'"),
        ("prior", {"sample_timesteps": 60}, "between 1 and the 50 training steps"),
        ("decoder", {"sample_timesteps": [4, 4]}, "lists 2 values for 1 U-Nets"),
        ("decoder", {"sample_timesteps": 4, "ddim_sampling_eta": 2.0}, "`eta` must be a number in \\[0, 1\\]"),
        ("prior", {"init_image_embed_l2norm": True}, "init_image_embed_l2norm=True"),
    ],
)
def test_sampling_config_refusals(tmp_path, prior_sd, decoder_sd, kind, section, message):
    state = prior_sd if kind == "prior" else decoder_sd
    path = _save(tmp_path, {"model": state, "version": "1.15.6"})
    with pytest.raises(ConversionError, match=message):
        convert_dalle2_to_diffusers(path, tmp_path / "out", config={kind: section})
    assert not (tmp_path / "out").exists()


def test_noise_conditioned_upsampler_gets_its_sampling_level():
    torch.manual_seed(0)
    state = decoder_state_dict()
    sr = Dalle2UNet(dim=8, dim_mults=(1, 2), lowres_cond=True, lowres_noise_cond=True, attn_heads=2, attn_dim_head=8)
    state.update({f"unets.1.{k}": v for k, v in sr.state_dict().items()})
    state.update(noise_scheduler_buffers("noise_schedulers.1.", "linear"))
    state.update(noise_scheduler_buffers("lowres_conds.1.noise_scheduler.", "linear", 1000))
    unets, _, notes = convert_dalle2_decoder(state, source_version="1.15.6")
    assert unets[1].config.lowres_noise_sample_level == 0.2
    assert any("lowres_noise_sample_level = 0.2 (NOT inferable" in note for note in notes)
    unets, _, _ = convert_dalle2_decoder(state, source_version="1.15.6", config={"decoder": {"lowres_noise_sample_level": 0.1}})
    assert unets[1].config.lowres_noise_sample_level == 0.1
    with pytest.raises(ConversionError, match="lowres_noise_sample_level=1.5"):
        convert_dalle2_decoder(state, source_version="1.15.6", config={"decoder": {"lowres_noise_sample_level": 1.5}})
    state.update(noise_scheduler_buffers("lowres_conds.1.noise_scheduler.", "cosine", 1000))
    with pytest.raises(ConversionError, match="linear 1000-step one only"):
        convert_dalle2_decoder(state, source_version="1.15.6")
