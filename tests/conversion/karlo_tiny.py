"""
Tiny Karlo-format checkpoints for the converter's tests.

The models are built as diffusers modules with random weights and exported to Karlo's key layout by an inverse
mapping written here independently of the converter: it walks the diffusers modules in order and names each tensor
the way Karlo's constructors (``karlo/modules/xf.py`` ``PriorTransformer``, ``karlo/modules/unet.py`` ``UNetModel`` /
``PLMImUNet`` / ``SuperResUNetModel``) name it, fusing q/k/v per head as Karlo's attention expects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel

from unclip_pipelines.models import UnCLIPTextProjModel

# --------------------------------------------------------------------------------------------------------------------
# specs


@dataclass(frozen=True)
class PriorSpec:
    text_ctx: int = 6
    width: int = 32
    layers: int = 2
    heads: int = 4
    clip_dim: int = 16


@dataclass(frozen=True)
class UNetSpec:
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[bool, ...] = (False, True)
    head_channels: int = 16
    scale_shift: bool = True
    out_channels: int = 6
    in_channels: int = 3
    image_size: int = 8


@dataclass(frozen=True)
class DecoderSpec:
    unet: UNetSpec = field(default_factory=UNetSpec)
    clip_dim: int = 16
    xf_width: int = 24
    clip_emb_mult: int = 2


SR_SPEC = UNetSpec(
    channel_mult=(1, 2),
    attention_levels=(False, False),
    scale_shift=False,
    out_channels=3,
    in_channels=6,
    image_size=16,
)


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (diffusers and Karlo zero-initialise some layers, which would hide mix-ups)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name in ("clip_std",):
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
                continue
            noise = torch.randn(param.shape, generator=generator) * 0.3
            is_gain = param.dim() == 1 and name.endswith("weight")
            param.copy_(noise + (1.0 if is_gain else 0.0))
    return module.eval()


# --------------------------------------------------------------------------------------------------------------------
# diffusers-side tiny models


def make_prior(spec: PriorSpec = PriorSpec(), seed: int = 0) -> PriorTransformer:
    prior = PriorTransformer(
        num_attention_heads=spec.heads,
        attention_head_dim=spec.width // spec.heads,
        num_layers=spec.layers,
        embedding_dim=spec.clip_dim,
        num_embeddings=spec.text_ctx,
        additional_embeddings=4,
    )
    return _randomize(prior, seed)


def make_decoder(spec: DecoderSpec = DecoderSpec(), seed: int = 1) -> tuple[UNet2DConditionModel, UnCLIPTextProjModel]:
    u = spec.unet
    channels = [u.model_channels * m for m in u.channel_mult]
    unet = UNet2DConditionModel(
        sample_size=u.image_size,
        in_channels=u.in_channels,
        out_channels=u.out_channels,
        layers_per_block=u.num_res_blocks,
        block_out_channels=channels,
        down_block_types=["SimpleCrossAttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in u.attention_levels],
        up_block_types=[
            "SimpleCrossAttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(u.attention_levels)
        ],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        cross_attention_dim=spec.xf_width,
        class_embed_type="identity",
        attention_head_dim=u.head_channels,
        resnet_time_scale_shift="scale_shift" if u.scale_shift else "default",
    )
    text_proj = UnCLIPTextProjModel(
        clip_extra_context_tokens=spec.clip_emb_mult,
        clip_embeddings_dim=spec.clip_dim,
        time_embed_dim=4 * u.model_channels,
        cross_attention_dim=spec.xf_width,
    )
    return _randomize(unet, seed), _randomize(text_proj, seed + 100)


def make_super_res(spec: UNetSpec = SR_SPEC, seed: int = 2) -> tuple[UNet2DModel, UNet2DModel]:
    def one(s):
        unet = UNet2DModel(
            sample_size=spec.image_size,
            in_channels=spec.in_channels,
            out_channels=spec.out_channels,
            layers_per_block=spec.num_res_blocks,
            block_out_channels=[spec.model_channels * m for m in spec.channel_mult],
            down_block_types=["ResnetDownsampleBlock2D"] * len(spec.channel_mult),
            up_block_types=["ResnetUpsampleBlock2D"] * len(spec.channel_mult),
            add_attention=False,
            resnet_time_scale_shift="scale_shift" if spec.scale_shift else "default",
        )
        return _randomize(unet, s)

    return one(seed), one(seed + 1)


# --------------------------------------------------------------------------------------------------------------------
# inverse mapping: diffusers → Karlo keys


def fuse_per_head(parts: list[torch.Tensor], heads: int) -> torch.Tensor:
    """[q, k, v] (each heads × head_dim rows) → Karlo's rows: head 0's q, k, v, then head 1's, ..."""
    per_head = [p.reshape(heads, p.shape[0] // heads, *p.shape[1:]) for p in parts]
    stacked = torch.stack(per_head, dim=1)  # heads, parts, head_dim, ...
    return stacked.reshape(-1, *parts[0].shape[1:])


class _Exporter:
    def __init__(self, state: dict[str, torch.Tensor], prefix: str):
        self.state, self.prefix, self.out = state, prefix, {}

    def put(self, karlo: str, tensor: torch.Tensor) -> None:
        key = f"{self.prefix}.{karlo}"
        assert key not in self.out, key
        self.out[key] = tensor.detach().clone()

    def same(self, diffusers: str, karlo: str, names=("weight", "bias")) -> None:
        for n in names:
            self.put(f"{karlo}.{n}", self.state[f"{diffusers}.{n}"])

    def resnet(self, d: str, k: str) -> None:
        self.same(f"{d}.norm1", f"{k}.in_layers.0")
        self.same(f"{d}.conv1", f"{k}.in_layers.2")
        if f"{d}.time_emb_proj.weight" in self.state:
            self.same(f"{d}.time_emb_proj", f"{k}.emb_layers.1")
        self.same(f"{d}.norm2", f"{k}.out_layers.0")
        self.same(f"{d}.conv2", f"{k}.out_layers.3")
        if f"{d}.conv_shortcut.weight" in self.state:
            self.same(f"{d}.conv_shortcut", f"{k}.skip_connection")

    def attention(self, d: str, k: str, heads: int) -> None:
        s = self.state
        self.same(f"{d}.group_norm", f"{k}.norm")
        self.put(f"{k}.qkv.weight", fuse_per_head([s[f"{d}.to_{x}.weight"] for x in "qkv"], heads)[:, :, None])
        self.put(f"{k}.qkv.bias", fuse_per_head([s[f"{d}.to_{x}.bias"] for x in "qkv"], heads))
        self.put(
            f"{k}.encoder_kv.weight", fuse_per_head([s[f"{d}.add_{x}_proj.weight"] for x in "kv"], heads)[:, :, None]
        )
        self.put(f"{k}.encoder_kv.bias", fuse_per_head([s[f"{d}.add_{x}_proj.bias"] for x in "kv"], heads))
        self.put(f"{k}.proj_out.weight", s[f"{d}.to_out.0.weight"][:, :, None])
        self.put(f"{k}.proj_out.bias", s[f"{d}.to_out.0.bias"])


def prior_to_karlo(prior: PriorTransformer) -> dict[str, torch.Tensor]:
    e = _Exporter(prior.state_dict(), "model")
    e.same("time_embedding.linear_1", "time_embed.0")
    e.same("time_embedding.linear_2", "time_embed.2")
    e.same("encoder_hidden_states_proj", "text_enc_proj")
    e.same("embedding_proj", "text_emb_proj")
    e.same("proj_in", "clip_img_proj")
    e.same("proj_to_clip_embeddings", "out_proj")
    e.same("norm_out", "final_ln")
    e.put("positional_embedding", e.state["positional_embedding"])
    e.put("prd_emb", e.state["prd_embedding"])
    heads = prior.config.num_attention_heads
    for i in range(len(prior.transformer_blocks)):
        d, k = f"transformer_blocks.{i}", f"transformer.resblocks.{i}"
        e.put(f"{k}.attn.c_qkv.weight", fuse_per_head([e.state[f"{d}.attn1.to_{x}.weight"] for x in "qkv"], heads))
        e.put(f"{k}.attn.c_qkv.bias", fuse_per_head([e.state[f"{d}.attn1.to_{x}.bias"] for x in "qkv"], heads))
        e.same(f"{d}.attn1.to_out.0", f"{k}.attn.c_proj")
        e.same(f"{d}.norm1", f"{k}.ln_1")
        e.same(f"{d}.norm3", f"{k}.ln_2")
        e.same(f"{d}.ff.net.0.proj", f"{k}.mlp.c_fc")
        e.same(f"{d}.ff.net.2", f"{k}.mlp.c_proj")
    return e.out


def unet_to_karlo(unet: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Any of our UNets (decoder or SR) → Karlo ``UNetModel`` keys under ``prefix``."""
    e = _Exporter(unet.state_dict(), prefix)
    e.same("time_embedding.linear_1", "time_embed.0")
    e.same("time_embedding.linear_2", "time_embed.2")
    e.same("conv_in", "input_blocks.0.0")
    k = 1
    for i, block in enumerate(unet.down_blocks):
        attentions = getattr(block, "attentions", None)
        for j in range(len(block.resnets)):
            e.resnet(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{k}.0")
            if attentions is not None:
                e.attention(f"down_blocks.{i}.attentions.{j}", f"input_blocks.{k}.1", attentions[j].heads)
            k += 1
        if block.downsamplers is not None:
            e.resnet(f"down_blocks.{i}.downsamplers.0", f"input_blocks.{k}.0")
            k += 1
    mid_attentions = [a for a in getattr(unet.mid_block, "attentions", []) if a is not None]
    e.resnet("mid_block.resnets.0", "middle_block.0")
    if mid_attentions:
        e.attention("mid_block.attentions.0", "middle_block.1", mid_attentions[0].heads)
    e.resnet("mid_block.resnets.1", f"middle_block.{1 + len(mid_attentions)}")
    k = 0
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        n = len(block.resnets)
        for j in range(n):
            e.resnet(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{k}.0")
            sub = 1
            if attentions is not None:
                e.attention(f"up_blocks.{i}.attentions.{j}", f"output_blocks.{k}.1", attentions[j].heads)
                sub = 2
            if j == n - 1 and block.upsamplers is not None:
                e.resnet(f"up_blocks.{i}.upsamplers.0", f"output_blocks.{k}.{sub}")
            k += 1
    e.same("conv_norm_out", "out.0")
    e.same("conv_out", "out.2")
    return e.out


def decoder_to_karlo(unet: UNet2DConditionModel, text_proj: UnCLIPTextProjModel) -> dict[str, torch.Tensor]:
    out = unet_to_karlo(unet, "model")
    e = _Exporter(text_proj.state_dict(), "model")
    e.same("encoder_hidden_states_proj", "text_seq_proj.0")
    e.same("text_encoder_hidden_states_norm", "text_seq_proj.1")
    e.same("embedding_proj", "text_feat_proj")
    e.same("clip_image_embeddings_project_to_time_embeddings", "clip_emb")
    e.same("clip_extra_context_tokens_proj", "clip_tok_proj")
    e.put("cf_param", e.state["learned_classifier_free_guidance_embeddings"])
    assert not out.keys() & e.out.keys()
    return {**out, **e.out}


def super_res_to_karlo(first: UNet2DModel, last: UNet2DModel) -> dict[str, torch.Tensor]:
    return {**unet_to_karlo(first, "model_first_steps"), **unet_to_karlo(last, "model_last_step")}


# --------------------------------------------------------------------------------------------------------------------
# Karlo yaml configs of the tiny models (the fields Karlo's configs/*.yaml have)


def prior_yaml(spec: PriorSpec = PriorSpec()) -> str:
    return f"""model:
  type: prior
  diffusion_sampler: uniform
  hparams:
    text_ctx: {spec.text_ctx}
    xf_width: {spec.width}
    xf_layers: {spec.layers}
    xf_heads: {spec.heads}
    xf_final_ln: true
    text_drop: 0.2
    clip_dim: {spec.clip_dim}

diffusion:
  steps: 1000
  learn_sigma: false
  sigma_small: true
  noise_schedule: squaredcos_cap_v2
  use_kl: false
  predict_xstart: true
  rescale_learned_sigmas: false
  timestep_respacing: ''
"""


def decoder_yaml(spec: DecoderSpec = DecoderSpec()) -> str:
    u = spec.unet
    resolutions = ",".join(str(u.image_size // (1 << level)) for level, a in enumerate(u.attention_levels) if a)
    return f"""model:
  type: t2i-decoder
  diffusion_sampler: uniform
  hparams:
    image_size: {u.image_size}
    num_channels: {u.model_channels}
    num_res_blocks: {u.num_res_blocks}
    channel_mult: '{",".join(map(str, u.channel_mult))}'
    attention_resolutions: '{resolutions}'
    num_heads: -1
    num_head_channels: {u.head_channels}
    num_heads_upsample: -1
    use_scale_shift_norm: {str(u.scale_shift).lower()}
    dropout: 0.1
    clip_dim: {spec.clip_dim}
    clip_emb_mult: {spec.clip_emb_mult}
    text_ctx: 6
    xf_width: {spec.xf_width}
    xf_layers: 0
    xf_heads: 0
    xf_final_ln: false
    resblock_updown: true
    learn_sigma: {str(u.out_channels == 6).lower()}
    text_drop: 0.3
    clip_emb_type: image
    clip_emb_drop: 0.1
    use_plm: true

diffusion:
  steps: 1000
  learn_sigma: {str(u.out_channels == 6).lower()}
  sigma_small: false
  noise_schedule: squaredcos_cap_v2
  use_kl: false
  predict_xstart: false
  rescale_learned_sigmas: true
  timestep_respacing: ''
"""


def sr_yaml(spec: UNetSpec = SR_SPEC) -> str:
    mults = "\n".join(f"    - {m}" for m in spec.channel_mult)
    return f"""model:
  type: improved_sr_64_256
  diffusion_sampler: uniform
  hparams:
    channels: {spec.model_channels}
    depth: {spec.num_res_blocks}
    channels_multiple:
{mults}
    dropout: 0.0

diffusion:
  steps: 1000
  learn_sigma: false
  sigma_small: true
  noise_schedule: squaredcos_cap_v2
  use_kl: false
  predict_xstart: false
  rescale_learned_sigmas: true
  timestep_respacing: '7'
"""


# --------------------------------------------------------------------------------------------------------------------
# tiny CLIP


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes, '!' first (so '!' gets id 0, as in CLIP)."""
    direct = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    symbols, extra = [chr(b) for b in direct], 0
    for b in range(256):
        if b not in direct:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def write_tiny_clip(folder: str, *, text_ctx: int = 6, clip_dim: int = 16, vision: bool = False) -> str:
    """Write a tiny CLIPTextModelWithProjection + CLIPTokenizer (or a CLIPVisionModelWithProjection) folder."""
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(3)
    if vision:
        config = CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
            projection_dim=clip_dim,
        )
        CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)
        return folder
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": i + len(symbols) for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump(vocab, handle)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=text_ctx)
    tokenizer.save_pretrained(folder)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=clip_dim,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=text_ctx,
        projection_dim=clip_dim,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=0,
    )
    CLIPTextModelWithProjection(config).eval().save_pretrained(folder)
    return folder
