"""Native port of DALLE2-pytorch's ``DiffusionPriorNetwork`` (the causal transformer of the diffusion prior)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .layers import (
    ATTENTION_TYPES,
    LAYER_NORM_STABLE,
    LAYER_NORM_TYPES,
    MLP,
    Attention,
    LayerNorm,
    RelPosBias,
    SinusoidalPosEmb,
    SplitTokens,
    check_choice,
    l2norm,
)

#: how padding of the text encodings is handled: ``attention_mask`` (padded tokens are masked out of attention, up
#: to 0.22.x) or ``null_tokens`` (padded positions are replaced by learned per-position null tokens, 0.23.0 on)
TEXT_PADDING_MODES = ("attention_mask", "null_tokens")
#: what a dropped (classifier-free guidance "null") condition does:
#:  - ``attention_mask``: text encodings and text embedding are masked out of attention (up to 0.22.x);
#:  - ``ignored``: nothing (0.23.0 to 1.8.x computed the mask but never used it, so guidance had no effect);
#:  - ``null_embeddings``: text encodings, text embedding and the noised image embedding are replaced by the learned
#:    ``null_text_encodings`` / ``null_text_embeds`` / ``null_image_embed`` (1.10.4 on);
#:  - ``null_embeddings_keep_text_embed``: as above but the text embedding is kept (1.9.0 to 1.10.3, a typo).
NULL_CONDITIONING_MODES = ("attention_mask", "ignored", "null_embeddings", "null_embeddings_keep_text_embed")
#: where the self-conditioning token goes: ``before_query`` (1.12.1 on) or ``replaces_query`` (1.6.1 to 1.12.0,
#: where the tokens end ``[..., image embedding, image embedding, self-cond]`` and the learned query is unused)
SELF_COND_LAYOUTS = ("before_query", "replaces_query")


@dataclass
class Dalle2PriorOutput(BaseOutput):
    """
    Args:
        predicted_image_embedding: ``(batch, embedding_dim)``, the network's prediction (x_0, noise or v, as the
            scheduler's ``prediction_type`` says) in the prior's scaled embedding space.
    """

    predicted_image_embedding: torch.Tensor


class FeedForward(nn.Sequential):
    """``LayerNorm, Linear(dim, 2·inner), SwiGLU, [LayerNorm(inner)], Dropout, Linear(inner, dim)`` without biases."""

    def __init__(self, dim, mult, dropout, post_activation_norm, norm_kwargs):
        inner = int(mult * dim)
        super().__init__(
            LayerNorm(dim, **norm_kwargs),
            nn.Linear(dim, inner * 2, bias=False),
            SwiGLU(),
            LayerNorm(inner, **norm_kwargs) if post_activation_norm else nn.Identity(),
            nn.Dropout(dropout),
            nn.Linear(inner, dim, bias=False),
        )


class SwiGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.silu(gate)


class CausalTransformer(nn.Module):
    def __init__(
        self,
        *,
        dim,
        depth,
        dim_head,
        heads,
        ff_mult,
        norm_in,
        norm_out,
        attn_dropout,
        ff_dropout,
        final_proj,
        normformer,
        rotary_emb,
        attention_type,
        pb_relax_alpha,
        norm_kwargs,
        final_norm_stable,
    ):
        super().__init__()
        self.init_norm = LayerNorm(dim, **norm_kwargs) if norm_in else nn.Identity()
        self.rel_pos_bias = RelPosBias(heads=heads)
        rotary_dim = min(32, dim_head) if rotary_emb else None
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Attention(
                        dim,
                        causal=True,
                        dim_head=dim_head,
                        heads=heads,
                        dropout=attn_dropout,
                        rotary_dim=rotary_dim,
                        attention_type=attention_type,
                        pb_relax_alpha=pb_relax_alpha,
                        norm_kwargs=norm_kwargs,
                    ),
                    FeedForward(dim, ff_mult, ff_dropout, normformer, norm_kwargs),
                ]
            )
            for _ in range(depth)
        )
        final_kwargs = {**norm_kwargs, "stable": norm_kwargs.get("stable", False) or final_norm_stable}
        self.norm = LayerNorm(dim, **final_kwargs) if norm_out else nn.Identity()
        self.project_out = nn.Linear(dim, dim, bias=False) if final_proj else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[1]
        x = self.init_norm(x)
        attn_bias = self.rel_pos_bias(n, n + 1, device=x.device)
        for attn, ff in self.layers:
            x = attn(x, mask=mask, attn_bias=attn_bias) + x
            x = ff(x) + x
        return self.project_out(self.norm(x))


class Dalle2PriorNetwork(ModelMixin, ConfigMixin):
    r"""
    The diffusion prior network of lucidrains' DALLE2-pytorch (``DiffusionPriorNetwork`` with its
    ``CausalTransformer``), ported so that its checkpoints load into a diffusers model with identical outputs.

    A causal transformer reads ``[text encodings (max_text_len), text embedding, timestep, noised image embedding,
    (self-conditioning), learned query]`` and predicts the denoised image embedding from the last token. Attention is
    multi-query (one key/value head) with a learned null key/value, rotary embeddings and a T5 relative position
    bias; the feed-forward is SwiGLU; layer norms have a gain and no bias; linears have no bias.

    It is called like diffusers' ``PriorTransformer`` by this package's pipelines::

        prior(latents, timestep, proj_embedding=text_embeds, encoder_hidden_states=text_hidden_states,
              attention_mask=text_mask).predicted_image_embedding

    and :meth:`post_process_latents` maps the sampled (scaled) embedding back to CLIP space.

    Parameters (DALLE2-pytorch's names in brackets where they differ):
        embedding_dim (`int`): [``dim``] width of the network and of the CLIP embeddings.
        depth, dim_head, heads, ff_mult, norm_in, norm_out, final_proj, normformer, rotary_emb, attn_dropout,
            ff_dropout: the ``CausalTransformer``'s arguments.
        num_timesteps (`int` or `None`): size of the learned timestep embedding; ``None`` for the continuous
            (sinusoidal + MLP) one.
        num_time_embeds, num_image_embeds, num_text_embeds (`int`): tokens per timestep / image / text embedding.
        max_text_len (`int` or `None`): text tokens the network pads or truncates to (``null_tokens`` padding); with
            ``attention_mask`` padding the encodings are used at their own length and this is ``None``.
        self_cond (`bool`): self-conditioning on the previous x_0 estimate.
        condition_on_text_encodings (`bool`): [``DiffusionPrior.condition_on_text_encodings``] when ``False``, the
            text encodings are never given to the network (every text position is padding).
        layer_norm_type, layer_norm_stable, layer_norm_half_eps, attention_type, pb_relax_alpha, text_padding,
            null_conditioning, self_cond_layout: behaviour of the release the weights come from (see
            :mod:`unclip_pipelines.conversion.dalle2.versions`).
        image_embed_scale (`float`): [``DiffusionPrior.image_embed_scale``, default ``sqrt(dim)``] the prior works
            on l2-normalised CLIP image embeddings times this; :meth:`post_process_latents` divides by it.
        final_l2norm (`bool`): [``sampling_final_clamp_l2norm``] l2-normalise the sampled embedding.
        normalize_text_embed (`bool`): l2-normalise ``proj_embedding`` first, as DALLE2-pytorch's CLIP adapters do
            (``CLIPTextModelWithProjection.text_embeds`` are not normalised).
        source_version (`str`): the DALLE2-pytorch release whose behaviour the switches reproduce (informative).
    """

    _supports_gradient_checkpointing = False
    #: classifier-free guidance runs DALLE2-pytorch's null branch: the pipelines' prior stage passes
    #: ``text_cond_drop_mask`` / ``image_cond_drop_mask`` for the unconditional half (instead of an empty prompt)
    guidance_null_branch = True

    @register_to_config
    def __init__(
        self,
        *,
        embedding_dim: int = 768,
        depth: int = 6,
        dim_head: int = 64,
        heads: int = 8,
        ff_mult: float = 4,
        norm_in: bool = False,
        norm_out: bool = True,
        final_proj: bool = True,
        normformer: bool = False,
        rotary_emb: bool = True,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        num_timesteps: int | None = 1000,
        num_time_embeds: int = 1,
        num_image_embeds: int = 1,
        num_text_embeds: int = 1,
        max_text_len: int | None = 256,
        self_cond: bool = False,
        condition_on_text_encodings: bool = True,
        layer_norm_type: str = "gain",
        layer_norm_stable: str = "final",
        layer_norm_half_eps: float | None = 1e-3,
        attention_type: str = "cosine_sim",
        pb_relax_alpha: float = 128.0,
        text_padding: str = "null_tokens",
        null_conditioning: str = "null_embeddings",
        self_cond_layout: str = "before_query",
        image_embed_scale: float | None = None,
        final_l2norm: bool = False,
        normalize_text_embed: bool = True,
        source_version: str | None = None,
    ):
        super().__init__()
        check_choice(layer_norm_type, LAYER_NORM_TYPES, "layer_norm_type")
        check_choice(layer_norm_stable, LAYER_NORM_STABLE, "layer_norm_stable")
        check_choice(attention_type, ATTENTION_TYPES, "attention_type")
        check_choice(text_padding, TEXT_PADDING_MODES, "text_padding")
        check_choice(null_conditioning, NULL_CONDITIONING_MODES, "null_conditioning")
        check_choice(self_cond_layout, SELF_COND_LAYOUTS, "self_cond_layout")
        if text_padding == "null_tokens" and not max_text_len:
            raise ValueError("`text_padding='null_tokens'` needs `max_text_len`.")
        if null_conditioning.startswith("null_embeddings") and text_padding != "null_tokens":
            raise ValueError("`null_conditioning='null_embeddings*'` needs `text_padding='null_tokens'`.")
        if layer_norm_type == "functional" and layer_norm_stable != "none":
            raise ValueError("the functional (0.15.x) layer norm is never stable: set `layer_norm_stable='none'`.")
        dim = embedding_dim
        if layer_norm_type == "functional":
            norm_kwargs = {"kind": "functional"}
        else:
            norm_kwargs = {"kind": "gain", "stable": layer_norm_stable == "all", "half_eps": layer_norm_half_eps}

        self.to_text_embeds = nn.Sequential(
            nn.Linear(dim, dim * num_text_embeds) if num_text_embeds > 1 else nn.Identity(), SplitTokens(num_text_embeds)
        )
        if num_timesteps is not None:
            time_embed = nn.Embedding(num_timesteps, dim * num_time_embeds)
        else:
            time_embed = nn.Sequential(SinusoidalPosEmb(dim), MLP(dim, dim * num_time_embeds))
        self.to_time_embeds = nn.Sequential(time_embed, SplitTokens(num_time_embeds))
        self.to_image_embeds = nn.Sequential(
            nn.Linear(dim, dim * num_image_embeds) if num_image_embeds > 1 else nn.Identity(),
            SplitTokens(num_image_embeds),
        )
        self.learned_query = nn.Parameter(torch.randn(dim))
        self.causal_transformer = CausalTransformer(
            dim=dim,
            depth=depth,
            dim_head=dim_head,
            heads=heads,
            ff_mult=ff_mult,
            norm_in=norm_in,
            norm_out=norm_out,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            final_proj=final_proj,
            normformer=normformer,
            rotary_emb=rotary_emb,
            attention_type=attention_type,
            pb_relax_alpha=pb_relax_alpha,
            norm_kwargs=norm_kwargs,
            final_norm_stable=layer_norm_stable == "final",
        )
        if null_conditioning.startswith("null_embeddings"):
            self.null_text_encodings = nn.Parameter(torch.randn(1, max_text_len, dim))
            self.null_text_embeds = nn.Parameter(torch.randn(1, num_text_embeds, dim))
            self.null_image_embed = nn.Parameter(torch.randn(1, dim))
        elif text_padding == "null_tokens":  # 0.23.0 to 1.8.x: one set of per-position padding tokens
            self.null_text_encodings = nn.Parameter(torch.randn(1, max_text_len, dim))

    # ------------------------------------------------------------------------------------------------------------

    @property
    def image_embed_scale(self) -> float:
        scale = self.config.image_embed_scale
        return float(scale) if scale is not None else self.config.embedding_dim**0.5

    def post_process_latents(self, prior_latents: torch.Tensor) -> torch.Tensor:
        """The sampled embedding back in CLIP space: divided by ``image_embed_scale`` (and l2-normalised if set)."""
        if self.config.final_l2norm:
            prior_latents = l2norm(prior_latents) * self.image_embed_scale
        return prior_latents / self.image_embed_scale

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float | int,
        proj_embedding: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.BoolTensor | None = None,
        self_cond: torch.Tensor | None = None,
        text_cond_drop_mask: torch.BoolTensor | None = None,
        image_cond_drop_mask: torch.BoolTensor | None = None,
        return_dict: bool = True,
    ):
        """
        Args:
            hidden_states: ``(batch, embedding_dim)`` the noised image embedding (scaled space).
            timestep: the diffusion timestep(s), a number or a ``(batch,)`` / 0-d tensor.
            proj_embedding: ``(batch, embedding_dim)`` the CLIP text embedding (normalised here unless
                ``normalize_text_embed=False``).
            encoder_hidden_states: ``(batch, seq, embedding_dim)`` the CLIP text encodings (final-layer-norm
                output), or ``None``.
            attention_mask: ``(batch, seq)`` which encodings are real tokens. Positions whose encoding is all zeros
                count as padding too, as in DALLE2-pytorch (its CLIP adapters zero the encodings after the EOS).
            self_cond: ``(batch, embedding_dim)`` previous x_0 estimate for self-conditioning (zeros if ``None``).
            text_cond_drop_mask, image_cond_drop_mask: ``(batch,)`` rows whose text / image condition is dropped,
                DALLE2-pytorch's classifier-free guidance "null" branch (``forward_with_cond_scale`` drops both).
        """
        config = self.config
        image_embed = hidden_states
        batch, dim = image_embed.shape
        device, dtype = image_embed.device, image_embed.dtype

        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=device)
        timestep = timestep.to(device).reshape(-1)
        if timestep.numel() == 1:
            timestep = timestep.expand(batch)

        text_keep = _keep_mask(text_cond_drop_mask, batch, device)
        image_keep = _keep_mask(image_cond_drop_mask, batch, device)

        text_embed = proj_embedding.to(dtype)
        if config.normalize_text_embed:
            text_embed = l2norm(text_embed)
        text_embed = self.to_text_embeds(text_embed)
        image_tokens = self.to_image_embeds(image_embed)

        text_encodings = encoder_hidden_states if config.condition_on_text_encodings else None
        if text_encodings is None:
            text_encodings = torch.empty((batch, 0, dim), device=device, dtype=dtype)
            attention_mask = None
        text_encodings = text_encodings.to(dtype)
        text_mask = torch.any(text_encodings != 0.0, dim=-1)
        if attention_mask is not None:
            text_mask = text_mask & attention_mask.to(device=device, dtype=torch.bool)

        attn_mask = None
        if config.text_padding == "null_tokens":
            max_len = config.max_text_len
            text_encodings, text_mask = text_encodings[:, :max_len], text_mask[:, :max_len]
            remainder = max_len - text_encodings.shape[1]
            if remainder > 0:
                text_encodings = F.pad(text_encodings, (0, 0, 0, remainder), value=0.0)
                text_mask = F.pad(text_mask, (0, remainder), value=False)
            keep_encodings = text_mask[:, :, None]
            if config.null_conditioning.startswith("null_embeddings"):
                keep_encodings = keep_encodings & text_keep[:, None, None]
            text_encodings = torch.where(keep_encodings, text_encodings, self.null_text_encodings.to(dtype))
            if config.null_conditioning == "null_embeddings":
                text_embed = torch.where(text_keep[:, None, None], text_embed, self.null_text_embeds.to(dtype))
            if config.null_conditioning.startswith("null_embeddings"):
                image_tokens = torch.where(image_keep[:, None, None], image_tokens, self.null_image_embed.to(dtype))
        else:  # attention_mask padding (and guidance): mask text tokens and text embedding out of attention
            keep = text_keep[:, None]
            extra = config.num_time_embeds + config.num_image_embeds + 1 + int(config.self_cond)
            attn_mask = torch.cat(
                (
                    text_mask & keep,
                    keep.expand(batch, config.num_text_embeds),
                    torch.ones((batch, extra), dtype=torch.bool, device=device),
                ),
                dim=1,
            )

        if config.num_timesteps is None:
            time_embed = self.to_time_embeds(timestep.to(dtype))
        else:
            time_embed = self.to_time_embeds(timestep.long())

        queries = self.learned_query.to(dtype).expand(batch, 1, dim)
        if config.self_cond:
            self_cond = torch.zeros(batch, dim, device=device, dtype=dtype) if self_cond is None else self_cond
            self_cond = self_cond.to(dtype)[:, None, :]
            if config.self_cond_layout == "before_query":
                queries = torch.cat((self_cond, queries), dim=1)
            else:
                queries = torch.cat((image_tokens, self_cond), dim=1)

        tokens = torch.cat((text_encodings, text_embed, time_embed, image_tokens, queries), dim=1)
        tokens = self.causal_transformer(tokens, mask=attn_mask)
        prediction = tokens[:, -1, :]
        if not return_dict:
            return (prediction,)
        return Dalle2PriorOutput(predicted_image_embedding=prediction)


def _keep_mask(drop_mask, batch: int, device) -> torch.Tensor:
    if drop_mask is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    drop_mask = torch.as_tensor(drop_mask, device=device).to(torch.bool).reshape(-1)
    if drop_mask.numel() == 1:
        drop_mask = drop_mask.expand(batch)
    if drop_mask.shape[0] != batch:
        raise ValueError(f"a condition drop mask must have one entry per row ({batch}), got {drop_mask.shape[0]}.")
    return ~drop_mask
