#!/usr/bin/env python
"""
Convert lucidrains' DALLE2-pytorch checkpoints (``DiffusionPrior`` / ``Decoder``, trainer or model files, releases
0.15.x and 1.x) into this package's native diffusers ports, with the source release detected and reported. With
``--prior_checkpoint_path``, ``--decoder_checkpoint_path`` and ``--text_encoder_path`` it writes a whole
``UnCLIPPipeline`` folder instead.

Run ``python conversion/convert_dalle2_pytorch_to_diffusers.py --help`` for the flags, and see the
"DALLE2-pytorch" section of ``docs/conversion.md``. The logic lives in :mod:`unclip_pipelines.conversion.dalle2`.
"""

import sys

from unclip_pipelines.conversion.dalle2.cli import main

if __name__ == "__main__":
    sys.exit(main())
