"""Outputs of the unCLIP pipelines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class UnCLIPPipelineOutput(BaseOutput):
    """
    Args:
        images: the generated images (``pil``: list of PIL images; ``np``: ``(B, H, W, 3)`` in [0, 1]; ``pt``:
            ``(B, 3, H, W)`` in [0, 1]).
        image_embeds: the CLIP image embeddings the decoder was conditioned on, ``(B, D)``.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    image_embeds: torch.Tensor | None = None


@dataclass
class UnCLIPPriorPipelineOutput(BaseOutput):
    """
    Args:
        image_embeds: CLIP image embeddings sampled by the prior, ``(B, D)``.
        negative_image_embeds: the prior's embeddings for ``negative_prompt``, or ``None`` when none was given.
    """

    image_embeds: torch.Tensor
    negative_image_embeds: torch.Tensor | None = None
