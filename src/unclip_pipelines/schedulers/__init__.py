from .scheduling_dalle2_ddim import Dalle2DDIMScheduler, Dalle2DDIMSchedulerOutput
from .scheduling_unclip import UnCLIPInverseScheduler, UnCLIPScheduler, UnCLIPSchedulerOutput

__all__ = [
    "Dalle2DDIMScheduler",
    "Dalle2DDIMSchedulerOutput",
    "UnCLIPInverseScheduler",
    "UnCLIPScheduler",
    "UnCLIPSchedulerOutput",
]
