"""Converters from other unCLIP checkpoint formats into diffusers folders (see ``docs/conversion.md``)."""

from .common import ConversionError
from .karlo import (
    KarloConversionResult,
    KarloDecoderArch,
    KarloPriorArch,
    KarloUNetArch,
    convert_decoder,
    convert_karlo_to_diffusers,
    convert_prior,
    convert_super_res,
)

__all__ = [
    "ConversionError",
    "KarloConversionResult",
    "KarloDecoderArch",
    "KarloPriorArch",
    "KarloUNetArch",
    "convert_decoder",
    "convert_karlo_to_diffusers",
    "convert_prior",
    "convert_super_res",
]
