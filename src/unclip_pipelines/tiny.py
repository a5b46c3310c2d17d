"""Tiny random unCLIP components, built in-process (tests, benchmarks, and a smoke run without any weights)."""

from __future__ import annotations

import torch
from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from .models.text_proj import UnCLIPTextProjModel
from .schedulers.scheduling_unclip import UnCLIPScheduler
from .tokenization import build_clip_tokenizer


def karlo_schedulers() -> dict[str, UnCLIPScheduler]:
    """The three schedulers with Karlo's settings."""
    return {
        "prior_scheduler": UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="sample", clip_sample=True, clip_sample_range=5.0
        ),
        "decoder_scheduler": UnCLIPScheduler(
            variance_type="learned_range", prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0
        ),
        "super_res_scheduler": UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0
        ),
    }


def tiny_super_res_unet(sample_size: int, seed: int) -> UNet2DModel:
    """A convolution-only x4 upsampler U-Net (input: noisy image + upsampled low-res image, 6 channels)."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        in_channels=6,
        out_channels=3,
        add_attention=False,
        resnet_time_scale_shift="scale_shift",
    )


def tiny_unclip_components(
    seed: int = 0,
    embedding_dim: int = 32,
    decoder_sample_size: int = 32,
    super_res_stages: int = 1,
    image_variation: bool = False,
) -> dict:
    """
    Random components in Karlo's layout, small enough for CPU tests: a 5-layer CLIP text encoder of width
    ``embedding_dim``, a 1-layer prior, a two-level decoder at ``decoder_sample_size`` px with learned variance, and
    ``super_res_stages`` x4 upsamplers (the first split into ``super_res_first``/``super_res_last`` as in Karlo).
    With ``image_variation``, the prior is left out and a CLIP image encoder and processor are added.
    """
    tokenizer = build_clip_tokenizer(["horse", "red", "circle", "square", "blue", "a", "the", "of"])
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=embedding_dim,
            projection_dim=embedding_dim,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=len(tokenizer),
            max_position_embeddings=tokenizer.model_max_length,
        )
    ).eval()
    torch.manual_seed(seed + 1)
    cross_attention_dim = 100
    decoder = UNet2DConditionModel(
        sample_size=decoder_sample_size,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        in_channels=3,
        out_channels=6,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",
    ).eval()
    torch.manual_seed(seed + 2)
    text_proj = UnCLIPTextProjModel(
        clip_embeddings_dim=embedding_dim, time_embed_dim=4 * 32, cross_attention_dim=cross_attention_dim
    ).eval()
    schedulers = karlo_schedulers()
    components = {
        "decoder": decoder,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_proj": text_proj,
        "decoder_scheduler": schedulers["decoder_scheduler"],
        "super_res_first": None,
        "super_res_last": None,
    }
    if super_res_stages:
        components["super_res_scheduler"] = schedulers["super_res_scheduler"]
    size = decoder_sample_size
    for stage in range(super_res_stages):
        size *= 4
        prefix = "super_res" if stage == 0 else f"super_res_{stage + 1}"
        components[f"{prefix}_first"] = tiny_super_res_unet(size, seed + 10 * stage + 3).eval()
        components[f"{prefix}_last"] = tiny_super_res_unet(size, seed + 10 * stage + 4).eval()
    if image_variation:
        torch.manual_seed(seed + 5)
        components["image_encoder"] = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=embedding_dim,
                projection_dim=embedding_dim,
                num_hidden_layers=5,
                num_attention_heads=4,
                image_size=32,
                intermediate_size=37,
                patch_size=1,
            )
        ).eval()
        components["feature_extractor"] = CLIPImageProcessor(crop_size=32, size=32)
    else:
        torch.manual_seed(seed + 6)
        components["prior"] = PriorTransformer(
            num_attention_heads=2,
            attention_head_dim=12,
            embedding_dim=embedding_dim,
            num_layers=1,
            num_embeddings=tokenizer.model_max_length,
        ).eval()
        components["prior_scheduler"] = schedulers["prior_scheduler"]
    return components
