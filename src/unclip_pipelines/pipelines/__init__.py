from .inversion import FixedPointInversion
from .output import UnCLIPInversion, UnCLIPPipelineOutput, UnCLIPPriorPipelineOutput
from .pipeline_unclip import UnCLIPPipeline
from .pipeline_unclip_decoder import UnCLIPDecoderPipeline
from .pipeline_unclip_image_variation import UnCLIPImageVariationPipeline
from .pipeline_unclip_inpaint import UnCLIPInpaintPipeline
from .pipeline_unclip_prior import UnCLIPPriorPipeline
from .probes import probe_pca_grid

__all__ = [
    "FixedPointInversion",
    "UnCLIPDecoderPipeline",
    "UnCLIPImageVariationPipeline",
    "UnCLIPInpaintPipeline",
    "UnCLIPInversion",
    "UnCLIPPipeline",
    "UnCLIPPipelineOutput",
    "UnCLIPPriorPipeline",
    "UnCLIPPriorPipelineOutput",
    "probe_pca_grid",
]
