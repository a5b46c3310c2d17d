"""The decoder's conditioning projection of unCLIP (paper §2.1), weight-compatible with Karlo's ``text_proj``."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class UnCLIPTextProjModel(ModelMixin, ConfigMixin):
    r"""
    Turns a CLIP image embedding and the caption's CLIP text encoding into the decoder's conditioning.

    Following the paper (§2.1, after GLIDE), the image embedding is projected and *added to the timestep embedding*,
    and projected into ``clip_extra_context_tokens`` extra tokens that are *prepended to the caption tokens* the
    decoder cross-attends to. For classifier-free guidance the image embedding of the unconditional branch is a
    learned null embedding.

    The parameter names, the config and the channel-major layout of the extra tokens match Karlo's ``text_proj``
    (``kakaobrain/karlo-v1-alpha``), so its ``text_proj`` folder loads unchanged.

    Parameters:
        clip_extra_context_tokens (`int`, defaults to 4): number of extra context tokens made from the image embedding.
        clip_embeddings_dim (`int`, defaults to 768): width of the CLIP image and text embeddings.
        time_embed_dim (`int`): width of the decoder's timestep embedding.
        cross_attention_dim (`int`): width of the decoder's cross-attention context.
    """

    @register_to_config
    def __init__(
        self,
        *,
        clip_extra_context_tokens: int = 4,
        clip_embeddings_dim: int = 768,
        time_embed_dim: int,
        cross_attention_dim: int,
    ):
        super().__init__()
        # learned image embedding of the unconditional branch
        self.learned_classifier_free_guidance_embeddings = nn.Parameter(torch.zeros(clip_embeddings_dim))
        # additive time-embedding terms (text embedding and image embedding)
        self.embedding_proj = nn.Linear(clip_embeddings_dim, time_embed_dim)
        self.clip_image_embeddings_project_to_time_embeddings = nn.Linear(clip_embeddings_dim, time_embed_dim)
        # context tokens
        self.clip_extra_context_tokens_proj = nn.Linear(
            clip_embeddings_dim, clip_extra_context_tokens * cross_attention_dim
        )
        self.encoder_hidden_states_proj = nn.Linear(clip_embeddings_dim, cross_attention_dim)
        self.text_encoder_hidden_states_norm = nn.LayerNorm(cross_attention_dim)

    @property
    def clip_extra_context_tokens(self) -> int:
        return self.config.clip_extra_context_tokens

    def null_image_embeddings(self, batch_size: int) -> torch.Tensor:
        """The learned unconditional image embedding, repeated ``batch_size`` times."""
        return self.learned_classifier_free_guidance_embeddings[None].expand(batch_size, -1)

    def forward(
        self,
        *,
        image_embeddings: torch.Tensor,
        prompt_embeds: torch.Tensor,
        text_encoder_hidden_states: torch.Tensor,
        do_classifier_free_guidance: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image_embeddings: ``(B, clip_embeddings_dim)`` CLIP image embeddings of the conditional branch.
            prompt_embeds: ``(B', clip_embeddings_dim)`` pooled CLIP text embeddings; ``B' = 2B`` under guidance,
                unconditional half first.
            text_encoder_hidden_states: ``(B', L, clip_embeddings_dim)`` CLIP text encoder states, same order.
            do_classifier_free_guidance: prepend the learned null image embedding for the unconditional half.

        Returns:
            ``(encoder_hidden_states, additive_time_embeddings)``: ``(B', extra + L, cross_attention_dim)`` and
            ``(B', time_embed_dim)``.
        """
        if do_classifier_free_guidance:
            image_embeddings = torch.cat([self.null_image_embeddings(image_embeddings.shape[0]), image_embeddings])
        if image_embeddings.shape[0] != prompt_embeds.shape[0]:
            raise ValueError(
                f"`image_embeddings` has batch {image_embeddings.shape[0]} but `prompt_embeds` has batch "
                f"{prompt_embeds.shape[0]}; pass one image embedding per prompt embedding."
            )
        if image_embeddings.shape[-1] != self.config.clip_embeddings_dim:
            raise ValueError(
                f"`image_embeddings` are {image_embeddings.shape[-1]} wide but this text_proj expects "
                f"{self.config.clip_embeddings_dim} (its `clip_embeddings_dim`); use embeddings of the CLIP model the "
                "decoder was trained with."
            )
        batch_size = image_embeddings.shape[0]

        time_embeddings = self.embedding_proj(prompt_embeds) + self.clip_image_embeddings_project_to_time_embeddings(
            image_embeddings
        )
        # Karlo lays the extra tokens out channel-major: (B, C * n) -> (B, C, n) -> (B, n, C)
        extra_tokens = self.clip_extra_context_tokens_proj(image_embeddings)
        extra_tokens = extra_tokens.reshape(batch_size, -1, self.clip_extra_context_tokens).permute(0, 2, 1)

        text_tokens = self.text_encoder_hidden_states_norm(self.encoder_hidden_states_proj(text_encoder_hidden_states))
        return torch.cat([extra_tokens, text_tokens], dim=1), time_embeddings
