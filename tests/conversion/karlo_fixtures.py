"""The tiny Karlo-format checkpoints and files the Karlo converter's tests read (see karlo_tiny.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from .karlo_tiny import (
    SR_SPEC,
    DecoderSpec,
    PriorSpec,
    decoder_to_karlo,
    decoder_yaml,
    make_decoder,
    make_prior,
    make_super_res,
    prior_to_karlo,
    prior_yaml,
    sr_yaml,
    super_res_to_karlo,
    write_tiny_clip,
)


PRIOR = PriorSpec()
DECODER = DecoderSpec()
BATCH = 2
TIMESTEPS = torch.tensor([3, 700])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny diffusers models, their Karlo-format exports, and the files the CLI reads."""
    root = tmp_path_factory.mktemp("karlo")
    prior = make_prior(PRIOR)
    decoder, text_proj = make_decoder(DECODER)
    sr_first, sr_last = make_super_res(SR_SPEC)
    clip_mean, clip_std = prior.clip_mean.detach()[0].clone(), prior.clip_std.detach()[0].clone()
    ns = SimpleNamespace(
        root=root,
        prior=prior,
        decoder=decoder,
        text_proj=text_proj,
        sr_first=sr_first,
        sr_last=sr_last,
        clip_mean=clip_mean,
        clip_std=clip_std,
        prior_sd=prior_to_karlo(prior),
        decoder_sd=decoder_to_karlo(decoder, text_proj),
        sr_sd=super_res_to_karlo(sr_first, sr_last),
    )
    ns.files = {
        "prior": root / "prior-ckpt.ckpt",
        "decoder": root / "decoder-ckpt.ckpt",
        "sr": root / "improved-sr.ckpt",
        "stats": root / "ViT-L-14_stats.th",
        "prior_config": root / "prior.yaml",
        "decoder_config": root / "decoder.yaml",
        "sr_config": root / "sr.yaml",
    }
    # Lightning-style files: weights under "state_dict" next to plain bookkeeping
    for name, state in (("prior", ns.prior_sd), ("decoder", ns.decoder_sd), ("sr", ns.sr_sd)):
        torch.save({"state_dict": state, "global_step": 1000, "epoch": 3}, ns.files[name])
    torch.save((clip_mean, clip_std), ns.files["stats"])
    ns.files["prior_config"].write_text(prior_yaml(PRIOR))
    ns.files["decoder_config"].write_text(decoder_yaml(DECODER))
    ns.files["sr_config"].write_text(sr_yaml(SR_SPEC))
    ns.text_encoder = write_tiny_clip(str(root / "clip-text"), text_ctx=PRIOR.text_ctx, clip_dim=PRIOR.clip_dim)
    ns.image_encoder = write_tiny_clip(str(root / "clip-vision"), clip_dim=PRIOR.clip_dim, vision=True)
    return ns


def _assert_same_state(converted: torch.nn.Module, original: torch.nn.Module) -> None:
    got, want = converted.state_dict(), original.state_dict()
    assert got.keys() == want.keys()
    unequal = [key for key in want if not torch.equal(got[key], want[key])]
    assert not unequal, f"tensors differ after the round trip: {unequal[:10]}"
