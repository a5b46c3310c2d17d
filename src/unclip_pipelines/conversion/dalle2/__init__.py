"""
Convert lucidrains' DALLE2-pytorch checkpoints (``DiffusionPrior`` and ``Decoder``) into native diffusers ports.

DALLE2-pytorch's networks (multi-query cosine-similarity attention with null key/values, rotary + T5 position bias,
SwiGLU, gain-only layer norms, its own U-Net with cross-attention inside resnet blocks) have no counterpart among
diffusers' classes, so the weights go into :class:`~unclip_pipelines.models.dalle2.Dalle2PriorNetwork` and
:class:`~unclip_pipelines.models.dalle2.Dalle2UNet`, which keep the source's module tree. What changes is *which
release's arithmetic* they reproduce: DALLE2-pytorch changed it many times without renaming parameters, so the
release is read from the checkpoint (``version``), or given with ``source_version``, or — for the key layouts that
only one behaviour ever had — assumed and reported (see :mod:`.versions`).

Inputs: ``DiffusionPriorTrainer`` / ``DecoderTrainer`` checkpoints (``model`` / ``ema`` / ``ema_model`` entries), the
trackers' model-only files (``{config, model, version}``) and bare state dicts. Sizes are read from tensor shapes;
values no shape reveals come from the training config (``--config``, or the one embedded in the file), else
DALLE2-pytorch's defaults, and the summary says which. Every key must be consumed and every parameter filled,
otherwise :class:`~unclip_pipelines.conversion.common.ConversionError` lists the keys (loading is never non-strict).

Modules: :mod:`.versions` (what each release computes), :mod:`.checkpoints` (loading the files, picking the EMA or
online weights), :mod:`.config` (training configs, the source release, resolving values), :mod:`.schedulers` (noise
schedules → ``UnCLIPScheduler`` / ``Dalle2DDIMScheduler`` configs), :mod:`.rules` (key-mapping building blocks),
:mod:`.prior`, :mod:`.unet` (a U-Net's architecture from its weights), :mod:`.decoder`, :mod:`.pipeline` (one file
end to end, and which stages DALLE2-pytorch samples with DDIM), :mod:`.folder`
(a whole ``UnCLIPPipeline`` folder from a prior file, a decoder file and a CLIP text model) and :mod:`.cli`.
"""

from ..common import ConversionError
from .checkpoints import DECODER, PRIOR, WEIGHT_CHOICES, load_dalle2_checkpoint, read_version, select_state_dict
from .config import load_config
from .decoder import convert_dalle2_decoder
from .folder import Dalle2PipelineConversionResult, convert_dalle2_pipeline
from .pipeline import Dalle2ConversionResult, convert_dalle2_to_diffusers
from .prior import convert_dalle2_prior
from .schedulers import (
    NOISE_SCHEDULER_BUFFERS,
    SUPPORTED_SCHEDULES,
    beta_schedule_betas,
    detect_beta_schedule,
    scheduler_config,
)
from .versions import (
    DECODER_LAYOUT_DEFAULTS,
    DECODER_LAYOUT_RANGES,
    PRIOR_LAYOUT_DEFAULTS,
    PRIOR_LAYOUT_RANGES,
    decoder_semantics,
    format_version,
    parse_version,
    prior_semantics,
)

# Besides __all__ (that of the former dalle2.py), the other public module-level names of the former dalle2.py stay
# importable from here; the former dalle2_versions.py is .versions, the former dalle2_cli.py is .cli.
__all__ = [
    "Dalle2ConversionResult",
    "Dalle2PipelineConversionResult",
    "beta_schedule_betas",
    "convert_dalle2_decoder",
    "convert_dalle2_pipeline",
    "convert_dalle2_prior",
    "convert_dalle2_to_diffusers",
    "detect_beta_schedule",
    "load_dalle2_checkpoint",
    "select_state_dict",
]
