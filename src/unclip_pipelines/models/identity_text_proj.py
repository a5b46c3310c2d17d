"""A ``text_proj`` that changes nothing, for decoders that read CLIP's outputs themselves (DALLE2-pytorch's U-Net)."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class UnCLIPIdentityTextProjModel(ModelMixin, ConfigMixin):
    r"""
    The decoder conditioning of a pipeline whose decoder projects the CLIP image embedding and text encodings on its
    own, as :class:`~unclip_pipelines.models.dalle2.Dalle2UNet` does.

    It stands where Karlo's :class:`UnCLIPTextProjModel` stands in a pipeline folder (``text_proj/``), with the same
    call, and returns its inputs: the CLIP text encoder's hidden states as the decoder's ``encoder_hidden_states``
    (no extra context tokens, ``clip_extra_context_tokens = 0``) and the CLIP image embeddings as its
    ``class_labels``. It has no weights, and no learned null image embedding: such a decoder's classifier-free
    guidance replaces the conditioning inside the network (see ``guidance_null_branch`` on the ports), so under
    guidance the image embeddings are simply repeated for the unconditional half.

    Its folder holds only ``config.json``: :meth:`from_pretrained` builds it from the config.

    Parameters:
        clip_embeddings_dim (`int`, defaults to 768): width of the CLIP image embeddings the decoder takes.
    """

    #: tells the pipelines' decoder stage that the decoder gets CLIP's outputs unchanged
    passes_through = True

    @register_to_config
    def __init__(self, *, clip_embeddings_dim: int = 768):
        super().__init__()
        # not saved; lets `device` / `dtype` (and pipeline offloading) work on a module without weights
        self.register_buffer("_placement", torch.zeros(()), persistent=False)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Build the model from its folder's ``config.json`` (there are no weights to load)."""
        config_kwargs = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
        config = cls.load_config(pretrained_model_name_or_path, **{k: kwargs[k] for k in config_kwargs if k in kwargs})
        model = cls.from_config(config)
        if kwargs.get("torch_dtype") is not None:
            model = model.to(kwargs["torch_dtype"])
        return model.eval()

    @property
    def clip_extra_context_tokens(self) -> int:
        return 0

    def null_image_embeddings(self, batch_size: int) -> torch.Tensor:
        raise ValueError(
            "this pipeline's decoder has no learned null image *embedding*: its unconditional branch is replaced "
            "inside the network (learned null tokens), so 'caption_only' conditioning is not available. Use "
            "conditioning='prior' or 'text_embedding'."
        )

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
            prompt_embeds: ``(B', D)`` pooled CLIP text embeddings (unused; ``B' = 2B`` under guidance).
            text_encoder_hidden_states: ``(B', L, hidden)`` CLIP text encoder states.
            do_classifier_free_guidance: repeat the image embeddings for the unconditional half.

        Returns:
            ``(text_encoder_hidden_states, image_embeddings)``, both with ``B'`` rows.
        """
        if image_embeddings.shape[-1] != self.config.clip_embeddings_dim:
            raise ValueError(
                f"`image_embeddings` are {image_embeddings.shape[-1]} wide but the decoder takes "
                f"{self.config.clip_embeddings_dim} (`clip_embeddings_dim`); use embeddings of the CLIP model the "
                "decoder was trained with."
            )
        if do_classifier_free_guidance:
            image_embeddings = torch.cat([image_embeddings, image_embeddings])
        if image_embeddings.shape[0] != text_encoder_hidden_states.shape[0]:
            raise ValueError(
                f"`image_embeddings` has batch {image_embeddings.shape[0]} but the text encodings have batch "
                f"{text_encoder_hidden_states.shape[0]}; pass one image embedding per prompt."
            )
        return text_encoder_hidden_states, image_embeddings
