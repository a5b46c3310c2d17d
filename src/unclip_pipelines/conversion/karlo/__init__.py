"""
Convert Kakao Brain's Karlo (``kakaobrain/karlo`` v1.0.alpha) checkpoints into a diffusers unCLIP folder.

Karlo ships three PyTorch-Lightning checkpoints (``torch.load(path)["state_dict"]``):

* the prior (``model.*``): a causal transformer over ``[text tokens, text embedding, time, noisy image embedding,
  prd token]`` → :class:`~diffusers.PriorTransformer`, plus CLIP's image-embedding mean/std from ``ViT-L-14_stats.th``;
* the decoder (``model.*``): a guided-diffusion UNet conditioned on CLIP → :class:`~diffusers.UNet2DConditionModel`
  and our :class:`~unclip_pipelines.models.UnCLIPTextProjModel` (its conditioning projections);
* the 64→256 upsampler (``model_first_steps.*`` and ``model_last_step.*``) → two :class:`~diffusers.UNet2DModel`.

Sizes are read from tensor shapes, so Karlo-architecture models of other sizes convert as well as the released
ones; the few values no shape reveals (attention heads, image size) come from Karlo's yaml configs, an argument,
or Karlo v1.0.alpha's value, and the summary says which. Every source key must be consumed and every target
parameter filled; anything else raises :class:`ConversionError` naming the keys and the config values involved.

Modules: :mod:`.config` (key prefixes, Karlo's defaults, yaml configs, resolving values), :mod:`.checkpoints` (loading
the files), :mod:`.rules` (key-mapping building blocks), :mod:`.unet` (the UNet shared by decoder and upsampler),
:mod:`.prior`, :mod:`.decoder`, :mod:`.super_res`, :mod:`.schedulers`, :mod:`.encoders` (CLIP text / image models)
and :mod:`.pipeline` (the whole folder).
"""

from ..common import ConversionError
from .checkpoints import load_clip_stats, load_karlo_state_dict
from .config import (
    DECODER_PREFIX,
    KARLO_DECODER_HEAD_CHANNELS,
    KARLO_DECODER_IMAGE_SIZE,
    KARLO_PRIOR_NUM_HEADS,
    KARLO_SR_IMAGE_SIZE,
    PRIOR_CLIP_SAMPLE_RANGE,
    PRIOR_EXTRA_TOKENS,
    PRIOR_PREFIX,
    SR_FIRST_PREFIX,
    SR_LAST_PREFIX,
    load_karlo_config,
)
from .decoder import KarloDecoderArch, _text_proj_rules, convert_decoder, infer_decoder_arch
from .pipeline import IMAGE_VARIATION, TXT2IMG, VARIANTS, KarloConversionResult, convert_karlo_to_diffusers
from .prior import KarloPriorArch, _prior_rules, convert_prior, infer_prior_arch
from .rules import deinterleave_heads
from .schedulers import build_scheduler_configs
from .super_res import convert_super_res, infer_super_res_arch
from .unet import KarloUNetArch, _unet_rules

# Besides __all__, the module-level constants of the former karlo.py stay importable from here, and so do the rule
# tables the tests check on the released sizes (_prior_rules, _text_proj_rules, _unet_rules).
__all__ = [
    "ConversionError",
    "KarloConversionResult",
    "KarloDecoderArch",
    "KarloPriorArch",
    "KarloUNetArch",
    "build_scheduler_configs",
    "convert_decoder",
    "convert_karlo_to_diffusers",
    "convert_prior",
    "convert_super_res",
    "deinterleave_heads",
    "infer_decoder_arch",
    "infer_prior_arch",
    "infer_super_res_arch",
    "load_clip_stats",
    "load_karlo_config",
    "load_karlo_state_dict",
]
