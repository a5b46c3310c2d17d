#!/usr/bin/env python
"""
Convert Kakao Brain's Karlo checkpoints (prior, decoder, 64→256 upsampler) into a diffusers unCLIP folder laid out
like ``kakaobrain/karlo-v1-alpha`` (or ``-image-variations`` with ``--variant image_variation``).

Run ``python conversion/convert_karlo_to_diffusers.py --help`` for the flags, and see ``docs/conversion.md``.
The logic lives in :mod:`unclip_pipelines.conversion.karlo`.
"""

import sys

from unclip_pipelines.conversion.karlo_cli import main

if __name__ == "__main__":
    sys.exit(main())
