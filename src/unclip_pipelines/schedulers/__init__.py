from .scheduling_unclip import UnCLIPScheduler, UnCLIPSchedulerOutput

__all__ = ["UnCLIPScheduler", "UnCLIPSchedulerOutput"]
