"""Command line of the DALLE2-pytorch converter (``conversion/convert_dalle2_pytorch_to_diffusers.py``)."""

from __future__ import annotations

import argparse
import sys

from ..common import ConversionError
from .checkpoints import WEIGHT_CHOICES
from .pipeline import convert_dalle2_to_diffusers

EXAMPLE = """\
examples (LAION's laion/DALLE2-PyTorch files):
  python conversion/convert_dalle2_pytorch_to_diffusers.py --checkpoint_path prior/latest.pth \\
      --config prior/prior_config.json --allow-pickle --dump_path ./laion-prior
  python conversion/convert_dalle2_pytorch_to_diffusers.py --checkpoint_path decoder/v1.0.2/latest.pth \\
      --config decoder/v1.0.2/decoder_config.json --image_sizes 64 --dump_path ./laion-decoder
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert a lucidrains DALLE2-pytorch prior or decoder checkpoint into native diffusers ports "
        "(Dalle2PriorNetwork / Dalle2UNet) with UnCLIPScheduler configs, saved as safetensors.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint_path", required=True, help="trainer checkpoint, tracker model file or state dict")
    parser.add_argument("--dump_path", required=True, help="output folder (prior/ or decoder/, super_res_first/, ...)")
    parser.add_argument("--kind", choices=["auto", "prior", "decoder"], default="auto", help="refuse other kinds")
    parser.add_argument(
        "--weights",
        choices=WEIGHT_CHOICES,
        default="auto",
        help="auto: the EMA weights when present (ema_model / ema), else model; ema: require them; model: online",
    )
    parser.add_argument("--config", help="the DALLE2-pytorch training config JSON (train_*_config / *_config.json)")
    parser.add_argument(
        "--source_version",
        help="DALLE2-pytorch release the checkpoint was trained with (e.g. 1.1.0), when the file does not record it",
    )
    parser.add_argument(
        "--image_sizes", type=int, nargs="+", help="decoder: image size of each U-Net (written as sample_size)"
    )
    parser.add_argument(
        "--allow-pickle",
        "--allow_pickle",
        dest="allow_pickle",
        action="store_true",
        help="unpickle the file fully (trainer files hold a packaging.Version and optimizer objects); runs code from "
        "the file, so only for files you trust",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = convert_dalle2_to_diffusers(
            args.checkpoint_path,
            args.dump_path,
            kind=args.kind,
            weights=args.weights,
            config=args.config,
            source_version=args.source_version,
            image_sizes=tuple(args.image_sizes) if args.image_sizes else None,
            allow_pickle=args.allow_pickle,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
