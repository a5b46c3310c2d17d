"""unCLIP (DALL·E 2, arXiv 2204.06125) for Hugging Face diffusers: pipelines, schedulers, models, training."""

from .models import UnCLIPTextProjModel
from .pipelines import (
    UnCLIPDecoderPipeline,
    UnCLIPImageVariationPipeline,
    UnCLIPPipeline,
    UnCLIPPipelineOutput,
    UnCLIPPriorPipeline,
    UnCLIPPriorPipelineOutput,
)
from .schedulers import UnCLIPScheduler, UnCLIPSchedulerOutput

__version__ = "0.1.0"

__all__ = [
    "UnCLIPDecoderPipeline",
    "UnCLIPImageVariationPipeline",
    "UnCLIPPipeline",
    "UnCLIPPipelineOutput",
    "UnCLIPPriorPipeline",
    "UnCLIPPriorPipelineOutput",
    "UnCLIPScheduler",
    "UnCLIPSchedulerOutput",
    "UnCLIPTextProjModel",
]
