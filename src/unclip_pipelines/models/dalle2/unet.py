"""Native port of DALLE2-pytorch's decoder ``Unet`` (one stage of its ``Decoder`` cascade)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .layers import (
    LAYER_NORM_STABLE,
    LAYER_NORM_TYPES,
    LINEAR_ATTENTION_VALUE_NORMS,
    Attention,
    CrossAttention,
    LayerNorm,
    LinearAttention,
    Residual,
    SinusoidalPosEmb,
    SplitTokens,
    ToSequence,
    check_choice,
)
from .prior_network import _keep_mask

#: up-sampling of the decoder path: ``pixel_shuffle`` (1x1 conv, SiLU, PixelShuffle; 0.21.0 on, default),
#: ``nearest`` (nearest ×2 then 3x3 conv) or ``conv_transpose`` (4x4 stride-2 transposed conv, up to 0.20.x)
UPSAMPLE_TYPES = ("pixel_shuffle", "nearest", "conv_transpose")
#: down-sampling of the encoder path: ``pixel_unshuffle`` (space-to-depth then 1x1 conv, 1.10.0 on), ``conv``
#: (4x4 stride-2 conv, up to 1.9.x) or ``cross_embed`` (``cross_embed_downsample=True``)
DOWNSAMPLE_TYPES = ("pixel_unshuffle", "conv", "cross_embed")
SELF_ATTENTION_TYPES = ("plain", "pb_relax", "double_scaled", "cosine_sim")
CROSS_ATTENTION_TYPES = ("plain", "pb_relax", "scaled", "cosine_sim")
#: how the pipelines' super-resolution stage resizes the previous stage's image for an upsampler (``lowres_cond``):
#: DALLE2-pytorch's ``Decoder.sample`` uses ``nearest``; ``bicubic`` is Karlo's (antialiased) resize
LOWRES_RESAMPLE_MODES = ("nearest", "bicubic")


@dataclass
class Dalle2UNetOutput(BaseOutput):
    """
    Args:
        sample: ``(batch, out_channels, height, width)``; with a learned variance the second half of the channels is
            the unnormalised variance interpolation fraction in [-1, 1].
    """

    sample: torch.Tensor


class WeightStandardizedConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        weight = self.weight
        mean = weight.mean(dim=(1, 2, 3), keepdim=True)
        var = torch.var(weight.reshape(weight.shape[0], -1), dim=-1, unbiased=False).reshape(-1, 1, 1, 1)
        weight = (weight - mean) * (var + eps).rsqrt()
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Block(nn.Module):
    def __init__(self, dim, dim_out, groups=8, weight_standardization=False):
        super().__init__()
        conv = WeightStandardizedConv2d if weight_standardization else nn.Conv2d
        self.project = conv(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x, scale_shift=None):
        x = self.norm(self.project(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


class ResnetBlock(nn.Module):
    def __init__(
        self,
        dim,
        dim_out,
        *,
        cond_dim=None,
        time_cond_dim=None,
        groups=8,
        weight_standardization=False,
        cross_attention_type="scaled",
        cross_pb_relax_alpha=1024.0,
        norm_kwargs=None,
    ):
        super().__init__()
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_cond_dim, dim_out * 2)) if time_cond_dim else None
        self.cross_attn = None
        if cond_dim:
            self.cross_attn = CrossAttention(
                dim_out,
                context_dim=cond_dim,
                attention_type=cross_attention_type,
                pb_relax_alpha=cross_pb_relax_alpha,
                norm_kwargs=norm_kwargs,
            )
        self.block1 = Block(dim, dim_out, groups=groups, weight_standardization=weight_standardization)
        self.block2 = Block(dim_out, dim_out, groups=groups, weight_standardization=weight_standardization)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, time_emb=None, cond=None):
        scale_shift = None
        if self.time_mlp is not None and time_emb is not None:
            scale_shift = self.time_mlp(time_emb)[:, :, None, None].chunk(2, dim=1)
        h = self.block1(x, scale_shift=scale_shift)
        if self.cross_attn is not None:
            b, c, hh, ww = h.shape
            seq = h.reshape(b, c, hh * ww).transpose(1, 2)
            seq = self.cross_attn(seq, context=cond) + seq
            h = seq.transpose(1, 2).reshape(b, c, hh, ww)
        h = self.block2(h)
        return h + self.res_conv(x)


class CrossEmbedLayer(nn.Module):
    def __init__(self, dim_in, kernel_sizes, dim_out=None, stride=2):
        super().__init__()
        dim_out = dim_out or dim_in
        kernel_sizes = sorted(kernel_sizes)
        scales = [int(dim_out / (2**i)) for i in range(1, len(kernel_sizes))]
        scales = [*scales, dim_out - sum(scales)]
        self.convs = nn.ModuleList(
            nn.Conv2d(dim_in, s, k, stride=stride, padding=(k - stride) // 2) for k, s in zip(kernel_sizes, scales)
        )

    def forward(self, x):
        return torch.cat([conv(x) for conv in self.convs], dim=1)


class PixelUnshuffle(nn.Module):
    """``Rearrange('b c (h s1) (w s2) -> b (c s1 s2) h w', s1=2, s2=2)``."""

    def forward(self, x):
        return F.pixel_unshuffle(x, 2)


class PixelShuffleUpsample(nn.Module):
    def __init__(self, dim, dim_out=None):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(dim, (dim_out or dim) * 4, 1), nn.SiLU(), nn.PixelShuffle(2))

    def forward(self, x):
        return self.net(x)


def _downsample(kind, dim, dim_out, kernel_sizes):
    if kind == "pixel_unshuffle":
        return nn.Sequential(PixelUnshuffle(), nn.Conv2d(dim * 4, dim_out, 1))
    if kind == "conv":
        return nn.Conv2d(dim, dim_out, 4, 2, 1)
    return CrossEmbedLayer(dim, kernel_sizes, dim_out=dim_out, stride=2)


def _upsample(kind, dim, dim_out):
    if kind == "pixel_shuffle":
        return PixelShuffleUpsample(dim, dim_out)
    if kind == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, dim_out, 3, padding=1))
    return nn.ConvTranspose2d(dim, dim_out, 4, 2, 1)


def _per_stage(value, n, name):
    value = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
    if len(value) != n:
        raise ValueError(f"`{name}` needs one value per stage ({n}), got {len(value)}.")
    return value


class Dalle2UNet(ModelMixin, ConfigMixin):
    r"""
    One U-Net of lucidrains' DALLE2-pytorch ``Decoder`` (its ``Unet`` class), ported so that its checkpoints load
    into a diffusers model with identical outputs.

    Conditioning, as in DALLE2-pytorch: the timestep becomes hidden features (added to every resnet block as
    scale/shift) and ``num_time_tokens`` tokens; the CLIP image embedding (first U-Net of a cascade) becomes
    ``num_image_tokens`` tokens and is added to the time features; the CLIP text encodings (optional) are projected
    to ``cond_dim`` tokens. Resnet blocks of all but the outermost stage cross-attend to the time+image tokens; the
    middle blocks also to the text tokens. Upsampler U-Nets (``lowres_cond``) get the low-resolution image
    concatenated at the input (and at the output from 1.0 on).

    Call::

        unet(sample, timestep, encoder_hidden_states=text_encodings, class_labels=image_embeds,
             attention_mask=text_mask).sample

    ``class_labels`` (or ``image_embeds=``) is the l2-normalised CLIP image embedding; ``encoder_hidden_states`` the
    CLIP text encodings with their ``attention_mask``. For an upsampler, pass ``lowres_cond_img`` (in [-1, 1]) or a
    ``sample`` with twice the channels (``[noisy, low-res]``, as this package's super-resolution stage does).
    ``text_cond_drop_mask`` / ``image_cond_drop_mask`` select the rows of DALLE2-pytorch's classifier-free-guidance
    null branch (learned null tokens).

    The config keeps DALLE2-pytorch's argument names (``channels`` is ``in_channels``, ``channels_out`` is
    ``out_channels``), plus the switches of the release the weights come from (layer norm, attention scaling, up and
    down sampling, see :mod:`unclip_pipelines.conversion.dalle2.versions`). ``lowres_resample`` is read by the
    pipelines' super-resolution stage, not by the network: how the previous stage's image is resized for this
    upsampler (``nearest``, as DALLE2-pytorch samples). So is ``lowres_noise_sample_level`` (``Decoder``'s, 0.2 by
    default) for a ``lowres_noise_cond`` upsampler: the stage noises the low-resolution image to timestep
    ``int(1000 · level)`` of a linear schedule and passes that level, as ``Decoder.sample`` does.
    """

    _supports_gradient_checkpointing = False
    #: classifier-free guidance runs DALLE2-pytorch's null branch: the pipelines' decoder and super-resolution stages
    #: pass ``text_cond_drop_mask`` / ``image_cond_drop_mask`` for the unconditional half and guide every output
    #: channel, the learned-variance ones included, as DALLE2-pytorch does
    guidance_null_branch = True

    @register_to_config
    def __init__(
        self,
        *,
        dim: int = 64,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        in_channels: int = 3,
        out_channels: int | None = None,
        sample_size: int | None = None,
        init_dim: int | None = None,
        image_embed_dim: int | None = None,
        text_embed_dim: int | None = None,
        cond_dim: int | None = None,
        num_image_tokens: int = 4,
        num_time_tokens: int = 2,
        self_attn: bool | tuple[bool, ...] = False,
        attn_dim_head: int = 32,
        attn_heads: int = 16,
        lowres_cond: bool = False,
        lowres_noise_cond: bool = False,
        self_cond: bool = False,
        sparse_attn: bool = False,
        cond_on_text_encodings: bool = False,
        max_text_len: int = 256,
        cond_on_image_embeds: bool = False,
        add_image_embeds_to_time: bool = True,
        init_cross_embed: bool = True,
        init_cross_embed_kernel_sizes: tuple[int, ...] = (3, 7, 15),
        init_conv_kernel_size: int = 7,
        resnet_groups: int | tuple[int, ...] = 8,
        resnet_weight_standardization: bool = False,
        num_resnet_blocks: int | tuple[int, ...] = 2,
        cross_embed_downsample_kernel_sizes: tuple[int, ...] = (2, 4),
        memory_efficient: bool = False,
        scale_skip_connection: bool = False,
        final_conv_kernel_size: int = 1,
        upsample_type: str = "pixel_shuffle",
        downsample_type: str = "pixel_unshuffle",
        lowres_cond_at_output: bool = True,
        text_mask_from_encodings: bool = True,
        layer_norm_type: str = "gain",
        layer_norm_stable: str = "none",
        layer_norm_half_eps: float | None = 1e-3,
        chan_norm_sqrt_divide: bool = False,
        self_attention_type: str = "double_scaled",
        cross_attention_type: str = "scaled",
        self_pb_relax_alpha: float = 128.0,
        cross_pb_relax_alpha: float = 1024.0,
        linear_attention_value_norm: str = "l2norm",
        lowres_resample: str = "nearest",
        lowres_noise_sample_level: float = 0.2,
        source_version: str | None = None,
    ):
        super().__init__()
        check_choice(upsample_type, UPSAMPLE_TYPES, "upsample_type")
        check_choice(downsample_type, DOWNSAMPLE_TYPES, "downsample_type")
        check_choice(layer_norm_type, LAYER_NORM_TYPES, "layer_norm_type")
        check_choice(layer_norm_stable, LAYER_NORM_STABLE, "layer_norm_stable")
        check_choice(self_attention_type, SELF_ATTENTION_TYPES, "self_attention_type")
        check_choice(cross_attention_type, CROSS_ATTENTION_TYPES, "cross_attention_type")
        check_choice(linear_attention_value_norm, LINEAR_ATTENTION_VALUE_NORMS, "linear_attention_value_norm")
        check_choice(lowres_resample, LOWRES_RESAMPLE_MODES, "lowres_resample")
        if not 0 <= lowres_noise_sample_level < 1:
            raise ValueError(
                f"`lowres_noise_sample_level` must be in [0, 1) (a fraction of the 1000 noising steps), got "
                f"{lowres_noise_sample_level!r}."
            )
        if cond_on_text_encodings and not text_embed_dim:
            raise ValueError("`cond_on_text_encodings` needs `text_embed_dim`.")
        if cond_on_image_embeds and not image_embed_dim:
            raise ValueError("`cond_on_image_embeds` needs `image_embed_dim`.")

        channels = in_channels
        channels_out = out_channels or channels
        if layer_norm_type == "functional":
            norm_kwargs = {"kind": "functional"}
            chan_kwargs = {"kind": "gain", "sqrt_divide": chan_norm_sqrt_divide}
        else:
            stable = layer_norm_stable == "all"
            norm_kwargs = {"kind": "gain", "stable": stable, "half_eps": layer_norm_half_eps}
            chan_kwargs = {**norm_kwargs, "sqrt_divide": chan_norm_sqrt_divide}

        init_channels = channels * (1 + int(lowres_cond) + int(self_cond))
        init_dim = init_dim or dim
        if init_cross_embed:
            self.init_conv = CrossEmbedLayer(init_channels, init_cross_embed_kernel_sizes, dim_out=init_dim, stride=1)
        else:
            self.init_conv = nn.Conv2d(init_channels, init_dim, init_conv_kernel_size, padding=init_conv_kernel_size // 2)

        dims = [init_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        num_stages = len(in_out)
        cond_dim = cond_dim or dim
        time_cond_dim = dim * 4

        self.to_time_hiddens = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, time_cond_dim), nn.GELU())
        self.to_time_tokens = nn.Sequential(
            nn.Linear(time_cond_dim, cond_dim * num_time_tokens), SplitTokens(num_time_tokens)
        )
        self.to_time_cond = nn.Sequential(nn.Linear(time_cond_dim, time_cond_dim))
        if cond_on_image_embeds and image_embed_dim != cond_dim:
            self.image_to_tokens = nn.Sequential(
                nn.Linear(image_embed_dim, cond_dim * num_image_tokens), SplitTokens(num_image_tokens)
            )
        else:
            self.image_to_tokens = nn.Identity()
        self.to_image_hiddens = (
            nn.Sequential(nn.Linear(image_embed_dim, time_cond_dim), nn.GELU())
            if cond_on_image_embeds and add_image_embeds_to_time
            else None
        )
        self.norm_cond = nn.LayerNorm(cond_dim)
        self.norm_mid_cond = nn.LayerNorm(cond_dim)
        self.text_to_cond = nn.Linear(text_embed_dim, cond_dim) if cond_on_text_encodings else None
        self.to_lowres_noise_cond = (
            nn.Sequential(
                SinusoidalPosEmb(dim),
                nn.Linear(dim, time_cond_dim),
                nn.GELU(),
                nn.Linear(time_cond_dim, time_cond_dim),
            )
            if lowres_noise_cond
            else None
        )
        self.null_image_embed = nn.Parameter(torch.randn(1, num_image_tokens, cond_dim))
        self.null_image_hiddens = nn.Parameter(torch.randn(1, time_cond_dim))
        self.null_text_embed = nn.Parameter(torch.randn(1, max_text_len, cond_dim))
        self.skip_connect_scale = 1.0 if not scale_skip_connection else 2**-0.5

        self_attn = _per_stage(self_attn, num_stages, "self_attn")
        resnet_groups = _per_stage(resnet_groups, num_stages, "resnet_groups")
        num_resnet_blocks = _per_stage(num_resnet_blocks, num_stages, "num_resnet_blocks")

        def self_attention(d):
            attention = Attention(
                d,
                heads=attn_heads,
                dim_head=attn_dim_head,
                attention_type=self_attention_type,
                pb_relax_alpha=self_pb_relax_alpha,
                norm_kwargs=norm_kwargs,
            )
            return ToSequence(Residual(attention))

        def resnet(d_in, d_out, groups, cond=None, time=True):
            return ResnetBlock(
                d_in,
                d_out,
                cond_dim=cond,
                time_cond_dim=time_cond_dim if time else None,
                groups=groups,
                weight_standardization=resnet_weight_standardization,
                cross_attention_type=cross_attention_type,
                cross_pb_relax_alpha=cross_pb_relax_alpha,
                norm_kwargs=norm_kwargs,
            )

        def stage_attention(d, layer_self_attn):
            if layer_self_attn:
                return self_attention(d)
            if sparse_attn:
                linear = LinearAttention(
                    d, dim_head=attn_dim_head, heads=attn_heads, value_norm=linear_attention_value_norm,
                    norm_kwargs=chan_kwargs,
                )
                return Residual(linear)
            return nn.Identity()

        self.init_resnet_block = resnet(init_dim, init_dim, resnet_groups[0]) if memory_efficient else None
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        skip_dims = []
        for ind, ((d_in, d_out), groups, n_blocks, layer_attn) in enumerate(
            zip(in_out, resnet_groups, num_resnet_blocks, self_attn)
        ):
            is_first, is_last = ind == 0, ind == num_stages - 1
            layer_cond = None if is_first else cond_dim
            d_layer = d_out if memory_efficient else d_in
            skip_dims.append(d_layer)
            pre = (
                _downsample(downsample_type, d_in, d_out, cross_embed_downsample_kernel_sizes)
                if memory_efficient
                else None
            )
            post = (
                _downsample(downsample_type, d_layer, d_out, cross_embed_downsample_kernel_sizes)
                if not is_last and not memory_efficient
                else nn.Conv2d(d_layer, d_out, 1)
            )
            self.downs.append(
                nn.ModuleList(
                    [
                        pre,
                        resnet(d_layer, d_layer, groups),
                        nn.ModuleList(resnet(d_layer, d_layer, groups, cond=layer_cond) for _ in range(n_blocks)),
                        stage_attention(d_layer, layer_attn),
                        post,
                    ]
                )
            )

        mid_dim = dims[-1]
        self.mid_block1 = resnet(mid_dim, mid_dim, resnet_groups[-1], cond=cond_dim)
        self.mid_attn = self_attention(mid_dim)
        self.mid_block2 = resnet(mid_dim, mid_dim, resnet_groups[-1], cond=cond_dim)

        for ind, ((d_in, d_out), groups, n_blocks, layer_attn) in enumerate(
            zip(reversed(in_out), reversed(resnet_groups), reversed(num_resnet_blocks), reversed(self_attn))
        ):
            is_last = ind == num_stages - 1
            layer_cond = None if is_last else cond_dim
            skip = skip_dims.pop()
            self.ups.append(
                nn.ModuleList(
                    [
                        resnet(d_out + skip, d_out, groups, cond=layer_cond),
                        nn.ModuleList(resnet(d_out + skip, d_out, groups, cond=layer_cond) for _ in range(n_blocks)),
                        stage_attention(d_out, layer_attn),
                        _upsample(upsample_type, d_out, d_in) if not is_last or memory_efficient else nn.Identity(),
                    ]
                )
            )

        self.final_resnet_block = resnet(dim * 2, dim, resnet_groups[0])
        out_dim_in = dim + (channels if lowres_cond and lowres_cond_at_output else 0)
        self.to_out = nn.Conv2d(out_dim_in, channels_out, final_conv_kernel_size, padding=final_conv_kernel_size // 2)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        attention_mask: torch.BoolTensor | None = None,
        *,
        image_embeds: torch.Tensor | None = None,
        lowres_cond_img: torch.Tensor | None = None,
        lowres_noise_level: torch.Tensor | None = None,
        self_cond: torch.Tensor | None = None,
        text_cond_drop_mask: torch.BoolTensor | None = None,
        image_cond_drop_mask: torch.BoolTensor | None = None,
        return_dict: bool = True,
    ):
        """
        Args:
            sample: ``(batch, in_channels, H, W)`` noisy image in [-1, 1]-ish scale; for an upsampler it may carry
                the low-resolution conditioning image as extra channels (``[noisy, low-res]``).
            timestep: diffusion timestep(s).
            encoder_hidden_states: ``(batch, seq, text_embed_dim)`` CLIP text encodings (text-conditioned U-Nets).
            class_labels / image_embeds: ``(batch, image_embed_dim)`` CLIP image embedding (first U-Net).
            attention_mask: ``(batch, seq)`` real text tokens; all-zero encodings count as padding from 1.0 on.
            lowres_cond_img: ``(batch, in_channels, H, W)`` the upsampled previous stage output in [-1, 1].
            lowres_noise_level: ``(batch,)`` noise level of the low-res image (``lowres_noise_cond`` U-Nets).
            self_cond: previous prediction for self-conditioning (zeros if ``None``).
            text_cond_drop_mask, image_cond_drop_mask: ``(batch,)`` rows of the guidance null branch.
        """
        config = self.config
        channels = config.in_channels
        image_embed = image_embeds if image_embeds is not None else class_labels
        if config.lowres_cond and lowres_cond_img is None and sample.shape[1] == 2 * channels:
            sample, lowres_cond_img = sample[:, :channels], sample[:, channels:]
        if config.lowres_cond and lowres_cond_img is None:
            raise ValueError("this U-Net is an upsampler (`lowres_cond`): pass `lowres_cond_img`.")
        batch, device, dtype = sample.shape[0], sample.device, sample.dtype

        x = sample
        if config.self_cond:
            x = torch.cat((x, torch.zeros_like(x) if self_cond is None else self_cond.to(dtype)), dim=1)
        if lowres_cond_img is not None:
            x = torch.cat((x, lowres_cond_img.to(dtype)), dim=1)

        x = self.init_conv(x)
        r = x.clone()

        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=device)
        timestep = timestep.to(device).reshape(-1)
        if timestep.numel() == 1:
            timestep = timestep.expand(batch)
        time_hiddens = self.to_time_hiddens(timestep.to(dtype))
        time_tokens = self.to_time_tokens(time_hiddens)
        t = self.to_time_cond(time_hiddens)
        if lowres_noise_level is not None:
            if self.to_lowres_noise_cond is None:
                raise ValueError("`lowres_noise_level` given to a U-Net without `lowres_noise_cond`.")
            level = torch.as_tensor(lowres_noise_level, device=device).reshape(-1).expand(batch)
            t = t + self.to_lowres_noise_cond(level.to(dtype))

        image_keep = _keep_mask(image_cond_drop_mask, batch, device)
        text_keep = _keep_mask(text_cond_drop_mask, batch, device)

        if image_embed is not None and self.to_image_hiddens is not None:
            image_hiddens = self.to_image_hiddens(image_embed.to(dtype))
            t = t + torch.where(image_keep[:, None], image_hiddens, self.null_image_hiddens.to(dtype))

        image_tokens = None
        if config.cond_on_image_embeds:
            if image_embed is None:
                raise ValueError("this U-Net is conditioned on CLIP image embeddings: pass `class_labels`.")
            image_tokens = self.image_to_tokens(image_embed.to(dtype))
            image_tokens = torch.where(image_keep[:, None, None], image_tokens, self.null_image_embed.to(dtype))

        text_tokens = None
        if encoder_hidden_states is not None and config.cond_on_text_encodings:
            text_encodings = encoder_hidden_states.to(dtype)
            if config.text_mask_from_encodings:
                text_mask = torch.any(text_encodings != 0.0, dim=-1)
                if attention_mask is not None:
                    text_mask = text_mask & attention_mask.to(device=device, dtype=torch.bool)
            elif attention_mask is not None:
                text_mask = attention_mask.to(device=device, dtype=torch.bool)
            else:
                text_mask = torch.ones(text_encodings.shape[:2], dtype=torch.bool, device=device)
            text_tokens = self.text_to_cond(text_encodings)
            max_len = config.max_text_len
            text_tokens, text_mask = text_tokens[:, :max_len], text_mask[:, :max_len]
            remainder = max_len - text_tokens.shape[1]
            if remainder > 0:
                text_tokens = F.pad(text_tokens, (0, 0, 0, remainder))
                text_mask = F.pad(text_mask, (0, remainder), value=False)
            keep = text_mask[:, :, None] & text_keep[:, None, None]
            text_tokens = torch.where(keep, text_tokens, self.null_text_embed.to(dtype))

        c = time_tokens if image_tokens is None else torch.cat((time_tokens, image_tokens), dim=1)
        mid_c = c if text_tokens is None else torch.cat((c, text_tokens), dim=1)
        c = self.norm_cond(c)
        mid_c = self.norm_mid_cond(mid_c)

        if self.init_resnet_block is not None:
            x = self.init_resnet_block(x, t)

        hiddens = []
        for pre_downsample, init_block, resnet_blocks, attn, post_downsample in self.downs:
            if pre_downsample is not None:
                x = pre_downsample(x)
            x = init_block(x, t, c)
            for block in resnet_blocks:
                x = block(x, t, c)
                hiddens.append(x)
            x = attn(x)
            hiddens.append(x)
            if post_downsample is not None:
                x = post_downsample(x)

        x = self.mid_block1(x, t, mid_c)
        x = self.mid_attn(x)
        x = self.mid_block2(x, t, mid_c)

        for init_block, resnet_blocks, attn, upsample in self.ups:
            x = torch.cat((x, hiddens.pop() * self.skip_connect_scale), dim=1)
            x = init_block(x, t, c)
            for block in resnet_blocks:
                x = torch.cat((x, hiddens.pop() * self.skip_connect_scale), dim=1)
                x = block(x, t, c)
            x = attn(x)
            x = upsample(x)

        x = torch.cat((x, r), dim=1)
        x = self.final_resnet_block(x, t)
        if lowres_cond_img is not None and config.lowres_cond_at_output:
            x = torch.cat((x, lowres_cond_img.to(dtype)), dim=1)
        out = self.to_out(x)
        if not return_dict:
            return (out,)
        return Dalle2UNetOutput(sample=out)
