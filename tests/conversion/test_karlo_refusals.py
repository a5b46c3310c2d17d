"""Tests that the Karlo converter refuses checkpoints and files it cannot convert faithfully, and says why."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

from unclip_pipelines.conversion import ConversionError
from unclip_pipelines.conversion.karlo import (
    convert_decoder,
    convert_prior,
    convert_super_res,
    load_clip_stats,
    load_karlo_state_dict,
)

from .karlo_fixtures import DECODER, PRIOR, tiny  # noqa: F401, F811 (tiny: a pytest fixture)
from .karlo_tiny import decoder_yaml, prior_yaml


# --------------------------------------------------------------------------------------------------------------------
# refusals


def test_unknown_key_is_refused(tiny):
    state = {**tiny.decoder_sd, "model.extra_head.weight": torch.zeros(3)}
    with pytest.raises(ConversionError, match=r"(?s)1 unexpected key.*model\.extra_head\.weight"):
        convert_decoder(state, num_head_channels=16)
    state = {**tiny.sr_sd, "ema.model_first_steps.out.2.bias": torch.zeros(3)}
    with pytest.raises(ConversionError, match=r"(?s)unexpected.*ema\.model_first_steps"):
        convert_super_res(state)


def test_missing_key_is_refused(tiny):
    state = dict(tiny.decoder_sd)
    del state["model.output_blocks.1.0.in_layers.2.bias"]
    with pytest.raises(ConversionError, match=r"(?s)1 missing key.*model\.output_blocks\.1\.0\.in_layers\.2\.bias"):
        convert_decoder(state, num_head_channels=16)
    state = dict(tiny.decoder_sd)
    del state["model.cf_param"]
    with pytest.raises(ConversionError, match="clip_emb_drop > 0"):
        convert_decoder(state, num_head_channels=16)
    state = {k: v for k, v in tiny.prior_sd.items() if not k.startswith("model.final_ln")}
    with pytest.raises(ConversionError, match="xf_final_ln"):
        convert_prior(state, tiny.clip_mean, tiny.clip_std, num_heads=4)


def test_unfilled_target_parameters_are_refused(tiny):
    from diffusers import PriorTransformer

    from unclip_pipelines.conversion.common import load_into_model

    state = dict(tiny.prior.state_dict())
    del state["transformer_blocks.0.attn1.to_k.bias"]
    model = PriorTransformer(**{k: v for k, v in tiny.prior.config.items() if not k.startswith("_")})
    with pytest.raises(ConversionError, match=r"(?s)diffusers side.*1 missing key.*attn1\.to_k\.bias"):
        load_into_model(model, state, "prior")


def test_shape_mismatch_names_the_config_value(tiny):
    state = dict(tiny.prior_sd)
    state["model.transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(4 * 32, 31)
    with pytest.raises(
        ConversionError, match=r"(?s)c_fc\.weight: shape \(128, 31\), expected \(128, 32\).*xf_width=32"
    ):
        convert_prior(state, tiny.clip_mean, tiny.clip_std, num_heads=4)
    state = dict(tiny.decoder_sd)
    state["model.output_blocks.0.0.in_layers.2.weight"] = torch.zeros(64, 100, 3, 3)
    with pytest.raises(ConversionError, match=r"channel_mult\[1\]=2"):
        convert_decoder(state, num_head_channels=16)
    with pytest.raises(ConversionError, match=r"has 15 entries but the prior's clip_dim is 16"):
        convert_prior(tiny.prior_sd, tiny.clip_mean[:15], tiny.clip_std[:15], num_heads=4)


def test_config_that_contradicts_the_weights_is_refused(tiny, tmp_path):
    path = tmp_path / "prior.yaml"
    path.write_text(prior_yaml(dataclasses.replace(PRIOR, width=64, heads=4)))
    with pytest.raises(ConversionError, match="config says xf_width=64 but the checkpoint has 32"):
        convert_prior(tiny.prior_sd, tiny.clip_mean, tiny.clip_std, config=str(path))
    path = tmp_path / "decoder.yaml"
    path.write_text(decoder_yaml(DECODER).replace("num_res_blocks: 1", "num_res_blocks: 3"))
    with pytest.raises(ConversionError, match="num_res_blocks=3 but the checkpoint has 1"):
        convert_decoder(tiny.decoder_sd, config=str(path))


def test_pickle_needs_allow_pickle(tiny, tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": tiny.sr_sd, "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ConversionError, match="--allow-pickle"):
        load_karlo_state_dict(path)
    with pytest.warns(UserWarning, match="arbitrary code"):
        state = load_karlo_state_dict(path, allow_pickle=True)
    assert state.keys() == tiny.sr_sd.keys()
    stats = tmp_path / "stats.th"
    torch.save((tiny.clip_mean, argparse.Namespace()), stats)
    with pytest.raises(ConversionError, match="--allow-pickle"):
        load_clip_stats(stats)
