"""Networks of unCLIP: our own where diffusers deprecated them, diffusers' maintained classes otherwise."""

from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel

from .identity_text_proj import UnCLIPIdentityTextProjModel
from .text_proj import UnCLIPTextProjModel

__all__ = [
    "PriorTransformer",
    "UNet2DConditionModel",
    "UNet2DModel",
    "UnCLIPIdentityTextProjModel",
    "UnCLIPTextProjModel",
]

# native ports of lucidrains' DALLE2-pytorch networks (conversion/convert_dalle2_pytorch_to_diffusers.py)
from .dalle2 import Dalle2PriorNetwork, Dalle2UNet  # noqa: E402

__all__ += ["Dalle2PriorNetwork", "Dalle2UNet"]
