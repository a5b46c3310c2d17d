"""
What each release of lucidrains' DALLE2-pytorch computes, as switches of the native ports.

DALLE2-pytorch changed its networks' arithmetic many times without renaming parameters, so the same state dict
computes different things under different releases (the cause of the "garbage unless you pin the version" reports,
dalle2-laion #20 / #34). This module maps a release to the switches of
:class:`~unclip_pipelines.models.dalle2.Dalle2PriorNetwork` and :class:`~unclip_pipelines.models.dalle2.Dalle2UNet`.
The table was read off the project's git history, release by release (the commits that changed ``LayerNorm``,
``ChanLayerNorm``, ``Attention``, ``CrossAttention``, ``LinearAttention``, ``DiffusionPriorNetwork``, ``Unet``):

prior network
    ====================  ==========================================================================================
    0.15.0 - 0.15.x       ``F.layer_norm`` with ``gamma`` / ``beta``; plain dot-product attention; padded text tokens
                          masked out of attention; guidance masks text tokens and the text embedding
    0.16.0                layer norm with a gain ``g`` only
    0.16.1                PB-relax attention (alpha 32², which also scales the relative position bias by alpha)
    0.16.2 - 0.20.x       every layer norm "stable" (input divided by its max)
    0.21.x - 0.22.x       not supported: the text mask was derived in three different ways within a few days
    0.23.0 - 0.23.2       learned per-position padding tokens (``null_text_embed``); guidance silently ignored
                          (the mask was computed but never used, issue #235)
    0.23.3 - 1.4.2        only the output norm is stable; PB-relax alpha 128 (1.4.1: half-precision epsilon 1e-3)
    1.4.3 - 1.8.x         cosine-similarity attention (scale 16)
    1.6.1 - 1.12.0        self-conditioning token replaced the learned query (``[.., image, image, self_cond]``)
    1.9.0 - 1.10.3        ``null_text_encodings`` / ``null_text_embeds`` / ``null_image_embed``; guidance drops text
                          encodings and the (noised) image embedding, but a typo kept the text embedding
    1.10.4 - 1.15.6       guidance drops all three
    ====================  ==========================================================================================

decoder U-Net
    ====================  ==========================================================================================
    0.15.0 - 0.15.x       ``gamma`` / ``beta`` layer norms; plain attention; transposed-conv up-sampling, 4x4 conv
                          down-sampling; text mask given by the caller; no low-res image at the output
    1.1.0 - 1.1.x         gain-only norms; PB-relax self-attention (alpha 128) and cross-attention (alpha 32²);
                          text mask from non-zero encodings; low-res image also concatenated before ``to_out``;
                          pixel-shuffle up-sampling (or nearest), 4x4 conv down-sampling
    1.2.x                 linear attention divides values by the number of pixels
    1.4.0 - 1.4.2         linear attention l2-normalises values; cross-attention scaled q·k (or cosine)
    1.4.3 - 1.15.6        self-attention scaled twice by ``dim_head**-0.5`` (or cosine); 1.7.0 weight
                          standardisation option; 1.10.0 pixel-unshuffle down-sampling; 1.14.0 ``cross_attn``
                          no longer wrapped (``.fn`` dropped from the keys)
    ====================  ==========================================================================================

Releases between 0.15.x and 1.1.0 are not supported for the decoder (its U-Net changed in ways this table does not
cover); neither are releases older than 0.15.0 or newer than 1.15.6 (the last one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..common import ConversionError

__all__ = [
    "LATEST_VERSION",
    "DecoderSemantics",
    "PriorSemantics",
    "decoder_semantics",
    "parse_version",
    "prior_semantics",
]

LATEST_VERSION = (1, 15, 6)
OLDEST_VERSION = (0, 15, 0)


def parse_version(version) -> tuple[int, int, int]:
    """``'1.15.6'`` / ``Version('1.15.6')`` / ``'v0.15.4'`` → ``(1, 15, 6)``."""
    text = str(version).strip()
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[.\-+]?[A-Za-z0-9.]*)?", text)
    if not match:
        raise ConversionError(f"Cannot read a DALLE2-pytorch version from {text!r} (expected e.g. '1.15.6').")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def format_version(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def _check_range(version: tuple[int, int, int], what: str) -> None:
    if version < OLDEST_VERSION:
        raise ConversionError(
            f"DALLE2-pytorch {format_version(version)} is older than the oldest release this converter supports "
            f"({format_version(OLDEST_VERSION)}) for the {what}."
        )
    if version > LATEST_VERSION:
        raise ConversionError(
            f"DALLE2-pytorch {format_version(version)} is newer than the last release this converter knows "
            f"({format_version(LATEST_VERSION)}); its {what} may compute differently. Check what changed and extend "
            "unclip_pipelines.conversion.dalle2.versions."
        )


@dataclass(frozen=True)
class PriorSemantics:
    """Switches of :class:`~unclip_pipelines.models.dalle2.Dalle2PriorNetwork` for one release."""

    version: tuple[int, int, int]
    key_layout: str  # "gamma_beta" | "no_null" | "null_text_embed" | "null_embeddings"
    layer_norm_type: str
    layer_norm_stable: str
    layer_norm_half_eps: float | None
    attention_type: str
    pb_relax_alpha: float
    text_padding: str
    null_conditioning: str
    self_cond_layout: str | None  # None: self-conditioning did not exist yet

    def model_switches(self) -> dict:
        return {
            "layer_norm_type": self.layer_norm_type,
            "layer_norm_stable": self.layer_norm_stable,
            "layer_norm_half_eps": self.layer_norm_half_eps,
            "attention_type": self.attention_type,
            "pb_relax_alpha": self.pb_relax_alpha,
            "text_padding": self.text_padding,
            "null_conditioning": self.null_conditioning,
            "self_cond_layout": self.self_cond_layout or "before_query",
            "source_version": format_version(self.version),
        }


def prior_semantics(version) -> PriorSemantics:
    v = parse_version(version) if not isinstance(version, tuple) else version
    _check_range(v, "diffusion prior")
    if (0, 21, 0) <= v < (0, 23, 0):
        raise ConversionError(
            f"DALLE2-pytorch {format_version(v)}: the prior network of the 0.21.x / 0.22.x releases is not supported "
            "(its text padding mask was derived in three different ways within a few days, see "
            "unclip_pipelines.conversion.dalle2.versions)."
        )
    functional = v < (0, 16, 0)
    if v < (0, 16, 1):
        attention, alpha = "plain", 1.0
    elif v < (0, 23, 3):
        attention, alpha = "pb_relax", float(32**2)
    elif v < (1, 4, 3):
        attention, alpha = "pb_relax", 128.0
    else:
        attention, alpha = "cosine_sim", 128.0
    if functional or v < (0, 16, 2):
        stable = "none"
    elif v < (0, 23, 3):
        stable = "all"
    else:
        stable = "final"
    if v < (0, 23, 0):
        padding, null, layout = "attention_mask", "attention_mask", ("gamma_beta" if functional else "no_null")
    elif v < (1, 9, 0):
        padding, null, layout = "null_tokens", "ignored", "null_text_embed"
    elif v < (1, 10, 4):
        padding, null, layout = "null_tokens", "null_embeddings_keep_text_embed", "null_embeddings"
    else:
        padding, null, layout = "null_tokens", "null_embeddings", "null_embeddings"
    if v < (1, 6, 1):
        self_cond_layout = None
    elif v < (1, 12, 1):
        self_cond_layout = "replaces_query"
    else:
        self_cond_layout = "before_query"
    return PriorSemantics(
        version=v,
        key_layout=layout,
        layer_norm_type="functional" if functional else "gain",
        layer_norm_stable=stable,
        layer_norm_half_eps=1e-3 if v >= (1, 4, 1) else None,
        attention_type=attention,
        pb_relax_alpha=alpha,
        text_padding=padding,
        null_conditioning=null,
        self_cond_layout=self_cond_layout,
    )


#: the release assumed for each prior key layout when the checkpoint records no version, or ``None`` when the
#: layout spans releases that compute differently (then ``--source_version`` is required)
PRIOR_LAYOUT_DEFAULTS = {
    "gamma_beta": (0, 15, 4),
    "no_null": None,
    "null_text_embed": None,
    "null_embeddings": LATEST_VERSION,
}
PRIOR_LAYOUT_RANGES = {
    "gamma_beta": "0.15.0 - 0.15.x",
    "no_null": "0.16.0 - 0.20.x",
    "null_text_embed": "0.23.0 - 1.8.x",
    "null_embeddings": "1.9.0 - 1.15.6",
}


@dataclass(frozen=True)
class DecoderSemantics:
    """Switches of :class:`~unclip_pipelines.models.dalle2.Dalle2UNet` for one release."""

    version: tuple[int, int, int]
    key_layout: str  # "gamma_beta" | "cross_attn_fn" | "cross_attn"
    layer_norm_type: str
    layer_norm_half_eps: float | None
    chan_norm_sqrt_divide: bool
    self_attention_type: str  # with cosine_sim_self_attn=False
    cross_attention_type: str  # with cosine_sim_cross_attn=False
    linear_attention_value_norm: str
    lowres_cond_at_output: bool
    text_mask_from_encodings: bool
    has_cosine_sim_cross_attn: bool
    has_cosine_sim_self_attn: bool
    has_self_cond: bool

    def model_switches(self, *, cosine_sim_self_attn: bool = False, cosine_sim_cross_attn: bool = False) -> dict:
        return {
            "layer_norm_type": self.layer_norm_type,
            "layer_norm_stable": "none",
            "layer_norm_half_eps": self.layer_norm_half_eps,
            "chan_norm_sqrt_divide": self.chan_norm_sqrt_divide,
            "self_attention_type": "cosine_sim" if cosine_sim_self_attn else self.self_attention_type,
            "cross_attention_type": "cosine_sim" if cosine_sim_cross_attn else self.cross_attention_type,
            "self_pb_relax_alpha": 128.0,
            "cross_pb_relax_alpha": float(32**2),
            "linear_attention_value_norm": self.linear_attention_value_norm,
            "lowres_cond_at_output": self.lowres_cond_at_output,
            "text_mask_from_encodings": self.text_mask_from_encodings,
            "source_version": format_version(self.version),
        }


def decoder_semantics(version) -> DecoderSemantics:
    v = parse_version(version) if not isinstance(version, tuple) else version
    _check_range(v, "decoder")
    if (0, 16, 0) <= v < (1, 1, 0):
        raise ConversionError(
            f"DALLE2-pytorch {format_version(v)}: decoders of releases between 0.16.0 and 1.0.x are not supported "
            "(supported: 0.15.x and 1.1.0 - 1.15.6, see unclip_pipelines.conversion.dalle2.versions)."
        )
    if v < (0, 16, 0):
        return DecoderSemantics(
            version=v,
            key_layout="gamma_beta",
            layer_norm_type="functional",
            layer_norm_half_eps=None,
            chan_norm_sqrt_divide=True,
            self_attention_type="plain",
            cross_attention_type="plain",
            linear_attention_value_norm="none",
            lowres_cond_at_output=False,
            text_mask_from_encodings=False,
            has_cosine_sim_cross_attn=False,
            has_cosine_sim_self_attn=False,
            has_self_cond=False,
        )
    if v < (1, 2, 0):
        value_norm = "none"
    elif v < (1, 4, 0):
        value_norm = "divide"
    else:
        value_norm = "l2norm"
    return DecoderSemantics(
        version=v,
        key_layout="cross_attn_fn" if v < (1, 14, 0) else "cross_attn",
        layer_norm_type="gain",
        layer_norm_half_eps=1e-3 if v >= (1, 4, 1) else None,
        chan_norm_sqrt_divide=False,
        self_attention_type="pb_relax" if v < (1, 4, 3) else "double_scaled",
        cross_attention_type="pb_relax" if v < (1, 4, 0) else "scaled",
        linear_attention_value_norm=value_norm,
        lowres_cond_at_output=True,
        text_mask_from_encodings=True,
        has_cosine_sim_cross_attn=v >= (1, 4, 0),
        has_cosine_sim_self_attn=v >= (1, 4, 3),
        has_self_cond=v >= (1, 6, 0),
    )


DECODER_LAYOUT_DEFAULTS = {"gamma_beta": (0, 15, 4), "cross_attn_fn": None, "cross_attn": LATEST_VERSION}
DECODER_LAYOUT_RANGES = {
    "gamma_beta": "0.15.0 - 0.15.x",
    "cross_attn_fn": "1.1.0 - 1.12.x",
    "cross_attn": "1.14.0 - 1.15.6",
}
