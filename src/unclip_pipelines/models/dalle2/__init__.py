"""
Native ports of lucidrains' DALLE2-pytorch networks, for checkpoints converted with
``conversion/convert_dalle2_pytorch_to_diffusers.py`` (see ``docs/conversion.md``).
"""

from .prior_network import Dalle2PriorNetwork, Dalle2PriorOutput
from .unet import Dalle2UNet, Dalle2UNetOutput

__all__ = ["Dalle2PriorNetwork", "Dalle2PriorOutput", "Dalle2UNet", "Dalle2UNetOutput"]
