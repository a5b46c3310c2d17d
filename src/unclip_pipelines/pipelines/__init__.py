from .output import UnCLIPPipelineOutput, UnCLIPPriorPipelineOutput
from .pipeline_unclip import UnCLIPPipeline
from .pipeline_unclip_decoder import UnCLIPDecoderPipeline
from .pipeline_unclip_image_variation import UnCLIPImageVariationPipeline
from .pipeline_unclip_prior import UnCLIPPriorPipeline

__all__ = [
    "UnCLIPDecoderPipeline",
    "UnCLIPImageVariationPipeline",
    "UnCLIPPipeline",
    "UnCLIPPipelineOutput",
    "UnCLIPPriorPipeline",
    "UnCLIPPriorPipelineOutput",
]
