"""Command line of the DALLE2-pytorch converter (``conversion/convert_dalle2_pytorch_to_diffusers.py``)."""

from __future__ import annotations

import argparse
import sys

from ..common import ConversionError
from .checkpoints import WEIGHT_CHOICES
from .folder import convert_dalle2_pipeline
from .pipeline import convert_dalle2_to_diffusers

EXAMPLE = """\
examples (LAION's laion/DALLE2-PyTorch files):
  python conversion/convert_dalle2_pytorch_to_diffusers.py --checkpoint_path prior/latest.pth \\
      --config prior/prior_config.json --allow-pickle --dump_path ./laion-prior
  python conversion/convert_dalle2_pytorch_to_diffusers.py --checkpoint_path decoder/v1.0.2/latest.pth \\
      --config decoder/v1.0.2/decoder_config.json --image_sizes 64 --dump_path ./laion-decoder
  # a whole UnCLIPPipeline folder (prior + decoder + a local CLIP text model)
  python conversion/convert_dalle2_pytorch_to_diffusers.py --prior_checkpoint_path prior/latest.pth \
      --prior_config prior/prior_config.json --decoder_checkpoint_path decoder/v1.0.2/latest.pth \
      --decoder_config decoder/v1.0.2/decoder_config.json --image_sizes 64 \
      --text_encoder_path ./clip-vit-large-patch14 --allow-pickle --dump_path ./laion-dalle2
"""

#: flags of the one-file mode (--checkpoint_path) that the pipeline mode replaces by a prior_ / decoder_ pair
_ONE_FILE_FLAGS = {"config": "--config", "source_version": "--source_version"}
_PIPELINE_FLAGS = (
    "prior_checkpoint_path",
    "decoder_checkpoint_path",
    "text_encoder_path",
    "prior_config",
    "decoder_config",
    "prior_source_version",
    "decoder_source_version",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert a lucidrains DALLE2-pytorch prior or decoder checkpoint into native diffusers ports "
        "(Dalle2PriorNetwork / Dalle2UNet) with UnCLIPScheduler (DDPM) or Dalle2DDIMScheduler (the config's "
        "sample_timesteps < timesteps) configs, saved as safetensors.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint_path", help="one file: trainer checkpoint, tracker model file or state dict")
    parser.add_argument("--dump_path", required=True, help="output folder (prior/ or decoder/, super_res_first/, ...)")
    whole = parser.add_argument_group(
        "whole pipeline", "instead of --checkpoint_path: write an UnCLIPPipeline folder from a prior and a decoder file"
    )
    whole.add_argument("--prior_checkpoint_path", help="the DiffusionPrior file")
    whole.add_argument("--decoder_checkpoint_path", help="the Decoder file")
    whole.add_argument(
        "--text_encoder_path",
        help="a local folder with a CLIPTextModelWithProjection and its CLIPTokenizer (the CLIP the models used)",
    )
    whole.add_argument("--prior_config", help="the prior's training config JSON")
    whole.add_argument("--decoder_config", help="the decoder's training config JSON")
    whole.add_argument("--prior_source_version", help="as --source_version, for the prior file")
    whole.add_argument("--decoder_source_version", help="as --source_version, for the decoder file")
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


def _check_mode(parser: argparse.ArgumentParser, args) -> bool:
    """``True`` for the whole-pipeline mode; exits with a usage error on a mix of the two modes."""
    pipeline_given = [f"--{name}" for name in _PIPELINE_FLAGS if getattr(args, name) is not None]
    if args.checkpoint_path is not None:
        if pipeline_given:
            given = ", ".join(pipeline_given)
            parser.error(f"--checkpoint_path converts one file; it cannot be combined with {given}.")
        return False
    if not pipeline_given:
        parser.error("give --checkpoint_path (one file), or --prior_checkpoint_path, --decoder_checkpoint_path and "
                     "--text_encoder_path (a whole pipeline folder).")
    missing = [f"--{n}" for n in _PIPELINE_FLAGS[:3] if getattr(args, n) is None]
    if missing:
        parser.error(f"a whole pipeline folder also needs {', '.join(missing)}.")
    mixed = [flag for name, flag in _ONE_FILE_FLAGS.items() if getattr(args, name) is not None]
    if args.kind != "auto":
        mixed.append("--kind")
    if mixed:
        parser.error(f"{', '.join(mixed)} apply to --checkpoint_path; use the --prior_* / --decoder_* flags.")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    whole_pipeline = _check_mode(parser, args)
    try:
        if whole_pipeline:
            result = convert_dalle2_pipeline(
                args.prior_checkpoint_path,
                args.decoder_checkpoint_path,
                args.text_encoder_path,
                args.dump_path,
                prior_config=args.prior_config,
                decoder_config=args.decoder_config,
                weights=args.weights,
                prior_source_version=args.prior_source_version,
                decoder_source_version=args.decoder_source_version,
                image_sizes=tuple(args.image_sizes) if args.image_sizes else None,
                allow_pickle=args.allow_pickle,
            )
            print(result.summary())
            return 0
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
