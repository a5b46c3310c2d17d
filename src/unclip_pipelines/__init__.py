"""unCLIP (DALL·E 2, arXiv 2204.06125) for Hugging Face diffusers: pipelines, schedulers, models, training."""

import os as _os

from .manipulations import UnCLIPPCA, normalize, slerp
from .models import UnCLIPTextProjModel
from .pipelines import (
    UnCLIPDecoderPipeline,
    UnCLIPImageVariationPipeline,
    UnCLIPInpaintPipeline,
    UnCLIPInversion,
    UnCLIPPipeline,
    UnCLIPPipelineOutput,
    UnCLIPPriorPipeline,
    UnCLIPPriorPipelineOutput,
    probe_pca_grid,
)
from .schedulers import (
    Dalle2DDIMScheduler,
    Dalle2DDIMSchedulerOutput,
    UnCLIPInverseScheduler,
    UnCLIPScheduler,
    UnCLIPSchedulerOutput,
)

__version__ = "0.1.0"

#: The embedded default model: an unCLIP stack trained on the Shapes World by ``training/train_shapes_world.py``,
#: shipped inside the package (diffusers folder; loads with UnCLIPPipeline and UnCLIPImageVariationPipeline).
EMBEDDED_MODEL = _os.path.join(_os.path.dirname(__file__), "embedded_model")

__all__ = [
    "EMBEDDED_MODEL",
    "Dalle2DDIMScheduler",
    "Dalle2DDIMSchedulerOutput",
    "UnCLIPDecoderPipeline",
    "UnCLIPImageVariationPipeline",
    "UnCLIPInpaintPipeline",
    "UnCLIPInverseScheduler",
    "UnCLIPInversion",
    "UnCLIPPCA",
    "UnCLIPPipeline",
    "UnCLIPPipelineOutput",
    "UnCLIPPriorPipeline",
    "UnCLIPPriorPipelineOutput",
    "UnCLIPScheduler",
    "UnCLIPSchedulerOutput",
    "UnCLIPTextProjModel",
    "normalize",
    "probe_pca_grid",
    "slerp",
]
