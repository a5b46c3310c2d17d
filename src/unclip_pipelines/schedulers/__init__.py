from .scheduling_unclip import UnCLIPInverseScheduler, UnCLIPScheduler, UnCLIPSchedulerOutput

__all__ = ["UnCLIPInverseScheduler", "UnCLIPScheduler", "UnCLIPSchedulerOutput"]
