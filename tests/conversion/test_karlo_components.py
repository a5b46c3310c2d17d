"""
Tests of the Karlo → diffusers converter, component by component (prior, decoder, upsampler), on tiny Karlo-format
checkpoints (see karlo_tiny.py), and on the released sizes.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from unclip_pipelines.conversion import ConversionError
from unclip_pipelines.conversion.karlo import KarloUNetArch, convert_decoder, convert_prior, convert_super_res
from unclip_pipelines.models import UnCLIPTextProjModel

from .karlo_fixtures import (  # noqa: F401, F811 (tiny: a pytest fixture)
    BATCH,
    DECODER,
    PRIOR,
    TIMESTEPS,
    _assert_same_state,
    tiny,
)
from .karlo_reference import decoder_forward, prior_forward, super_res_forward
from .karlo_tiny import (
    SR_SPEC,
    DecoderSpec,
    UNetSpec,
    decoder_to_karlo,
    decoder_yaml,
    make_decoder,
    prior_to_karlo,
    super_res_to_karlo,
)


def _public_config(model) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.items() if not k.startswith("_")}


def _text_inputs(clip_dim: int, text_ctx: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(BATCH, text_ctx, dtype=torch.bool)
    mask[1, text_ctx // 2 :] = False  # padded caption in the second sample
    return (
        torch.randn(BATCH, clip_dim, generator=g),
        torch.randn(BATCH, text_ctx, clip_dim, generator=g),
        mask,
        torch.randn(BATCH, clip_dim, generator=g),
    )


# --------------------------------------------------------------------------------------------------------------------
# prior


def test_prior_round_trip_is_exact_and_matches_karlo(tiny):
    prior, arch = convert_prior(tiny.prior_sd, tiny.clip_mean, tiny.clip_std, num_heads=PRIOR.heads)
    assert (arch.text_ctx, arch.xf_width, arch.xf_layers, arch.xf_heads, arch.clip_dim) == (
        PRIOR.text_ctx,
        PRIOR.width,
        PRIOR.layers,
        PRIOR.heads,
        PRIOR.clip_dim,
    )
    _assert_same_state(prior, tiny.prior)
    assert _public_config(prior) == _public_config(tiny.prior)

    text_emb, text_enc, mask, x = _text_inputs(PRIOR.clip_dim, PRIOR.text_ctx)
    with torch.no_grad():
        out = prior(x, TIMESTEPS, proj_embedding=text_emb, encoder_hidden_states=text_enc, attention_mask=mask)
        original = tiny.prior(
            x, TIMESTEPS, proj_embedding=text_emb, encoder_hidden_states=text_enc, attention_mask=mask
        )
        karlo = prior_forward(
            tiny.prior_sd, heads=PRIOR.heads, x=x, timesteps=TIMESTEPS, text_emb=text_emb, text_enc=text_enc, mask=mask
        )
    torch.testing.assert_close(out.predicted_image_embedding, original.predicted_image_embedding, rtol=0, atol=0)
    torch.testing.assert_close(out.predicted_image_embedding, karlo, rtol=1e-4, atol=1e-4)


def test_prior_head_count_comes_from_config_and_matters(tiny):
    from unclip_pipelines.conversion.karlo import load_karlo_config

    config = load_karlo_config(tiny.files["prior_config"])
    prior, arch = convert_prior(tiny.prior_sd, tiny.clip_mean, tiny.clip_std, config=config)
    assert arch.xf_heads == PRIOR.heads and any("xf_heads" in note for note in arch.notes)
    # without config or flag, Karlo's 32 heads are assumed, and the summary says it is a guess
    default, arch = convert_prior(tiny.prior_sd, tiny.clip_mean, tiny.clip_std)
    assert arch.xf_heads == 32 and any("NOT inferable" in note for note in arch.notes)
    wrong, arch = convert_prior(tiny.prior_sd, tiny.clip_mean, tiny.clip_std, num_heads=2)
    assert any("--prior_num_heads" in note for note in arch.notes)
    for other in (default, wrong):  # a wrong head count de-interleaves q/k/v differently
        assert not torch.equal(
            other.transformer_blocks[0].attn1.to_q.weight, prior.transformer_blocks[0].attn1.to_q.weight
        )
    with pytest.raises(ConversionError, match="contradicts the config's xf_heads"):
        convert_prior(tiny.prior_sd, tiny.clip_mean, tiny.clip_std, config=config, num_heads=2)


# --------------------------------------------------------------------------------------------------------------------
# decoder


def _check_decoder(spec: DecoderSpec, decoder, text_proj, karlo_sd, original_decoder, original_text_proj):
    _assert_same_state(decoder, original_decoder)
    _assert_same_state(text_proj, original_text_proj)
    assert _public_config(decoder) == _public_config(original_decoder)
    assert _public_config(text_proj) == _public_config(original_text_proj)

    u = spec.unet
    text_emb, text_enc, mask, image_emb = _text_inputs(spec.clip_dim, 5, seed=1)
    x = torch.randn(BATCH, u.in_channels, u.image_size, u.image_size, generator=torch.Generator().manual_seed(2))

    def run(unet, proj):
        context, added = proj(
            image_embeddings=image_emb,
            prompt_embeds=text_emb,
            text_encoder_hidden_states=text_enc,
            do_classifier_free_guidance=False,
        )
        full_mask = F.pad(mask, (spec.clip_emb_mult, 0), value=True)
        return unet(x, TIMESTEPS, encoder_hidden_states=context, class_labels=added, attention_mask=full_mask).sample

    with torch.no_grad():
        out, original = run(decoder, text_proj), run(original_decoder, original_text_proj)
        karlo = decoder_forward(
            karlo_sd,
            levels=len(u.channel_mult),
            num_res_blocks=u.num_res_blocks,
            head_channels=u.head_channels,
            x=x,
            timesteps=TIMESTEPS,
            image_emb=image_emb,
            text_emb=text_emb,
            text_enc=text_enc,
            mask=mask,
        )
    torch.testing.assert_close(out, original, rtol=0, atol=0)
    torch.testing.assert_close(out, karlo, rtol=1e-4, atol=1e-4)


def test_decoder_round_trip_is_exact_and_matches_karlo(tiny):
    decoder, text_proj, arch = convert_decoder(
        tiny.decoder_sd, num_head_channels=DECODER.unet.head_channels, image_size=DECODER.unet.image_size
    )
    u = arch.unet
    assert (u.model_channels, u.channel_mult, u.num_res_blocks, u.attention_levels, u.middle_attention) == (
        32,
        (1, 2),
        1,
        (False, True),
        True,
    )
    assert (arch.clip_dim, arch.xf_width, arch.clip_emb_mult, u.use_scale_shift_norm, u.out_channels) == (
        16,
        24,
        2,
        True,
        6,
    )
    _check_decoder(DECODER, decoder, text_proj, tiny.decoder_sd, tiny.decoder, tiny.text_proj)


OTHER_DECODER = DecoderSpec(
    unet=UNetSpec(
        channel_mult=(1, 2, 3),
        num_res_blocks=2,
        attention_levels=(False, True, True),
        head_channels=8,
        scale_shift=False,
        out_channels=3,
    ),
    clip_dim=12,
    xf_width=20,
    clip_emb_mult=3,
)


def test_decoder_of_another_size_converts_from_config(tmp_path):
    decoder, text_proj = make_decoder(OTHER_DECODER, seed=5)
    karlo_sd = decoder_to_karlo(decoder, text_proj)
    path = tmp_path / "decoder.yaml"
    path.write_text(decoder_yaml(OTHER_DECODER))
    converted, converted_proj, arch = convert_decoder(karlo_sd, config=str(path))
    assert arch.unet.channel_mult == (1, 2, 3) and arch.unet.num_res_blocks == 2 and arch.clip_emb_mult == 3
    assert converted.config.resnet_time_scale_shift == "default" and converted.config.attention_head_dim == 8
    _check_decoder(OTHER_DECODER, converted, converted_proj, karlo_sd, decoder, text_proj)


def test_decoder_head_layouts_diffusers_cannot_express_are_refused():
    arch = KarloUNetArch(
        model_channels=32,
        block_channels=(32, 64),
        num_res_blocks=1,
        attention_levels=(True, True),
        middle_attention=True,
        in_channels=3,
        out_channels=6,
        use_scale_shift_norm=True,
        encoder_channels=24,
        image_size=8,
        num_heads=2,
        num_head_channels=-1,
    )
    with pytest.raises(ConversionError, match="cannot be represented"):
        arch.diffusers_attention_head_dim()
    # a fixed number of heads is fine where only one width has attention
    single = dataclasses.replace(arch, attention_levels=(False, True))
    assert single.diffusers_attention_head_dim() == 32


# --------------------------------------------------------------------------------------------------------------------
# super-resolution


def test_super_res_round_trip_is_exact_and_matches_karlo(tiny):
    first, last, (arch_first, arch_last) = convert_super_res(tiny.sr_sd, config=str(tiny.files["sr_config"]))
    _assert_same_state(first, tiny.sr_first)
    _assert_same_state(last, tiny.sr_last)
    expected_config = {**_public_config(tiny.sr_first), "sample_size": 256}
    assert _public_config(first) == expected_config
    g = torch.Generator().manual_seed(4)
    x, low = torch.randn(BATCH, 3, 16, 16, generator=g), torch.randn(BATCH, 3, 16, 16, generator=g)
    for prefix, converted, original in (
        ("model_first_steps", first, tiny.sr_first),
        ("model_last_step", last, tiny.sr_last),
    ):
        with torch.no_grad():
            out = converted(torch.cat([x, low], dim=1), TIMESTEPS).sample
            ref = original(torch.cat([x, low], dim=1), TIMESTEPS).sample
            karlo = super_res_forward(
                tiny.sr_sd, prefix, levels=2, num_res_blocks=1, x=x, low_res=low, timesteps=TIMESTEPS
            )
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        torch.testing.assert_close(out, karlo, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# against Karlo's own modules, when a checkout of kakaobrain/karlo is available (KARLO_SRC=/path/to/karlo)


@pytest.mark.skipif(not os.environ.get("KARLO_SRC"), reason="set KARLO_SRC to a kakaobrain/karlo checkout")
def test_against_karlo_source(tiny):
    sys.path.insert(0, os.environ["KARLO_SRC"])
    try:
        from karlo.modules.unet import PLMImUNet, SuperResUNetModel
        from karlo.modules.xf import PriorTransformer as KarloPrior
    finally:
        sys.path.pop(0)

    def strip(state, prefix):
        return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}

    prior = KarloPrior(
        text_ctx=PRIOR.text_ctx,
        xf_width=PRIOR.width,
        xf_layers=PRIOR.layers,
        xf_heads=PRIOR.heads,
        xf_final_ln=True,
        clip_dim=PRIOR.clip_dim,
    ).eval()
    prior.load_state_dict(strip(tiny.prior_sd, "model"), strict=True)
    text_emb, text_enc, mask, x = _text_inputs(PRIOR.clip_dim, PRIOR.text_ctx)
    causal = torch.full((PRIOR.text_ctx + 4,) * 2, float("-inf")).triu(1)[None]
    with torch.no_grad():
        karlo = prior(x, TIMESTEPS, text_emb=text_emb, text_enc=text_enc, mask=mask, causal_mask=causal)
        ours = prior_forward(
            tiny.prior_sd, heads=PRIOR.heads, x=x, timesteps=TIMESTEPS, text_emb=text_emb, text_enc=text_enc, mask=mask
        )
    torch.testing.assert_close(ours, karlo, rtol=1e-4, atol=1e-4)

    u = DECODER.unet
    decoder = PLMImUNet(
        text_ctx=5,
        xf_width=DECODER.xf_width,
        in_channels=3,
        model_channels=u.model_channels,
        out_channels=u.out_channels,
        num_res_blocks=u.num_res_blocks,
        attention_resolutions=tuple(1 << i for i, a in enumerate(u.attention_levels) if a),
        dropout=0.0,
        channel_mult=u.channel_mult,
        num_heads=1,
        num_head_channels=u.head_channels,
        num_heads_upsample=-1,
        use_scale_shift_norm=u.scale_shift,
        resblock_updown=True,
        clip_dim=DECODER.clip_dim,
        clip_emb_mult=DECODER.clip_emb_mult,
        clip_emb_type="image",
        clip_emb_drop=0.1,
    ).eval()
    decoder.load_state_dict(strip(tiny.decoder_sd, "model"), strict=True)
    text_emb, text_enc, mask, image_emb = _text_inputs(DECODER.clip_dim, 5, seed=1)
    sample = torch.randn(BATCH, 3, u.image_size, u.image_size)
    with torch.no_grad():
        karlo = decoder(sample, TIMESTEPS, txt_feat=text_emb, txt_feat_seq=text_enc, mask=mask, y=image_emb)
        ours = decoder_forward(
            tiny.decoder_sd,
            levels=2,
            num_res_blocks=1,
            head_channels=u.head_channels,
            x=sample,
            timesteps=TIMESTEPS,
            image_emb=image_emb,
            text_emb=text_emb,
            text_enc=text_enc,
            mask=mask,
        )
    torch.testing.assert_close(ours, karlo, rtol=1e-4, atol=1e-4)

    for prefix in ("model_first_steps", "model_last_step"):
        sr = SuperResUNetModel(
            in_channels=3,
            model_channels=SR_SPEC.model_channels,
            out_channels=3,
            num_res_blocks=SR_SPEC.num_res_blocks,
            attention_resolutions=(),
            dropout=0.0,
            channel_mult=SR_SPEC.channel_mult,
            resblock_updown=True,
            use_middle_attention=False,
        ).eval()
        sr.load_state_dict(strip(tiny.sr_sd, prefix), strict=True)
        x, low = torch.randn(BATCH, 3, 16, 16), torch.randn(BATCH, 3, 16, 16)
        with torch.no_grad():
            karlo = sr(x, TIMESTEPS, low_res=low)
            ours = super_res_forward(
                tiny.sr_sd, prefix, levels=2, num_res_blocks=1, x=x, low_res=low, timesteps=TIMESTEPS
            )
        torch.testing.assert_close(ours, karlo, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# the released sizes (meta tensors: shapes only, nothing allocated)

# model.hparams of Karlo v1.0.alpha's configs/prior_1B_vit_l.yaml, decoder_900M_vit_l.yaml, improved_sr_64_256_1.4B.yaml
KARLO_PRIOR_HPARAMS = {
    "text_ctx": 77,
    "xf_width": 2048,
    "xf_layers": 20,
    "xf_heads": 32,
    "xf_final_ln": True,
    "text_drop": 0.2,
    "clip_dim": 768,
}
KARLO_DECODER_HPARAMS = {
    "image_size": 64,
    "num_channels": 320,
    "num_res_blocks": 3,
    "channel_mult": "",
    "attention_resolutions": "32,16,8",
    "num_heads": -1,
    "num_head_channels": 64,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": True,
    "dropout": 0.1,
    "clip_dim": 768,
    "clip_emb_mult": 4,
    "text_ctx": 77,
    "xf_width": 1536,
    "xf_layers": 0,
    "xf_heads": 0,
    "xf_final_ln": False,
    "resblock_updown": True,
    "learn_sigma": True,
    "text_drop": 0.3,
    "clip_emb_type": "image",
    "clip_emb_drop": 0.1,
    "use_plm": True,
}
KARLO_SR_HPARAMS = {"channels": 320, "depth": 3, "channels_multiple": [1, 2, 3, 4], "dropout": 0.0}


def test_released_karlo_sizes_are_read_as_karlo_v1_alpha():
    from accelerate import init_empty_weights
    from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel

    from unclip_pipelines.conversion.common import apply_rules
    from unclip_pipelines.conversion.karlo import (
        _prior_rules,
        _text_proj_rules,
        _unet_rules,
        infer_decoder_arch,
        infer_prior_arch,
        infer_super_res_arch,
    )

    # karlo-v1-alpha's published configs (PriorTransformer's defaults are Karlo's prior)
    decoder_config = dict(
        sample_size=64,
        layers_per_block=3,
        block_out_channels=(320, 640, 960, 1280),
        in_channels=3,
        out_channels=6,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
        up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        cross_attention_dim=1536,
        class_embed_type="identity",
        attention_head_dim=64,
        resnet_time_scale_shift="scale_shift",
    )
    sr_config = dict(
        sample_size=256,
        layers_per_block=3,
        block_out_channels=(320, 640, 960, 1280),
        in_channels=6,
        out_channels=3,
        down_block_types=("ResnetDownsampleBlock2D",) * 4,
        up_block_types=("ResnetUpsampleBlock2D",) * 4,
        add_attention=False,
    )
    with init_empty_weights():
        prior = PriorTransformer()
        decoder = UNet2DConditionModel(**decoder_config)
        text_proj = UnCLIPTextProjModel(
            clip_extra_context_tokens=4, clip_embeddings_dim=768, time_embed_dim=1280, cross_attention_dim=1536
        )
        sr = UNet2DModel(**sr_config)

    prior_sd = prior_to_karlo(prior)
    arch = infer_prior_arch(prior_sd, {"model": {"hparams": KARLO_PRIOR_HPARAMS}})
    assert {k: v for k, v in arch.diffusers_config().items()} == {
        k: v for k, v in prior.config.items() if not k.startswith("_")
    }
    apply_rules(prior_sd, _prior_rules(arch), "prior")  # every key consumed, every shape as expected

    decoder_sd = decoder_to_karlo(decoder, text_proj)
    arch = infer_decoder_arch(decoder_sd, {"model": {"hparams": KARLO_DECODER_HPARAMS}})
    assert arch.unet.channel_mult == (1, 2, 3, 4) and arch.unet.attention_levels == (False, True, True, True)
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in decoder.config.items() if not k.startswith("_")}
    got = arch.diffusers_config()
    assert {k: got[k] for k in got} == {k: expected[k] for k in got}
    assert arch.text_proj_config() == {k: v for k, v in text_proj.config.items() if not k.startswith("_")}
    apply_rules(decoder_sd, _unet_rules(arch.unet, "model", "decoder") + _text_proj_rules(arch), "decoder")

    sr_sd = super_res_to_karlo(sr, sr)
    for prefix in ("model_first_steps", "model_last_step"):
        part = {k: v for k, v in sr_sd.items() if k.startswith(prefix)}
        arch = infer_super_res_arch(part, prefix, {"model": {"hparams": KARLO_SR_HPARAMS}})
        assert arch.block_channels == (320, 640, 960, 1280) and arch.num_res_blocks == 3
        assert not arch.use_scale_shift_norm and not arch.has_attention
        apply_rules(part, _unet_rules(arch, prefix, prefix), "sr")


def test_uncopied_conversion_never_shares_memory(tiny, tmp_path):
    from safetensors.torch import load_file

    # 64-channel heads: the decoder's attention has a single head, where splitting q/k/v gives plain views
    sd = {k: v.clone() for k, v in tiny.decoder_sd.items()}
    decoder, text_proj, _ = convert_decoder(sd, num_head_channels=64, image_size=8, copy_tensors=False)
    decoder.save_pretrained(tmp_path / "decoder")
    text_proj.save_pretrained(tmp_path / "text_proj")
    saved = load_file(tmp_path / "decoder" / "diffusion_pytorch_model.safetensors")
    assert saved.keys() == decoder.state_dict().keys()
