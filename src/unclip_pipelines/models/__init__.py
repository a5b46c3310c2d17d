"""Networks of unCLIP: our own where diffusers deprecated them, diffusers' maintained classes otherwise."""

from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel

from .text_proj import UnCLIPTextProjModel

__all__ = ["PriorTransformer", "UNet2DConditionModel", "UNet2DModel", "UnCLIPTextProjModel"]
