"""Command line of the Karlo converter (``conversion/convert_karlo_to_diffusers.py``)."""

from __future__ import annotations

import argparse
import sys

from .common import ConversionError
from .karlo import IMAGE_VARIATION, TXT2IMG, convert_karlo_to_diffusers

EXAMPLE = """\
example (Karlo v1.0.alpha files):
  python conversion/convert_karlo_to_diffusers.py \\
      --prior_checkpoint_path prior-ckpt-step=01000000-of-01000000.ckpt \\
      --decoder_checkpoint_path decoder-ckpt-step=01000000-of-01000000.ckpt \\
      --super_res_unet_checkpoint_path improved-sr-ckpt-step=1.2M.ckpt \\
      --clip_stat_path ViT-L-14_stats.th \\
      --text_encoder_path ./clip-vit-large-patch14 \\
      --prior_config karlo/configs/prior_1B_vit_l.yaml \\
      --decoder_config karlo/configs/decoder_900M_vit_l.yaml \\
      --sr_config karlo/configs/improved_sr_64_256_1.4B.yaml \\
      --dump_path ./karlo-v1-alpha
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert Kakao Brain Karlo checkpoints into a diffusers unCLIP folder (karlo-v1-alpha layout).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    files = parser.add_argument_group("inputs")
    files.add_argument("--prior_checkpoint_path", help="Karlo prior .ckpt (txt2img only)")
    files.add_argument("--decoder_checkpoint_path", required=True, help="Karlo decoder .ckpt")
    files.add_argument("--super_res_unet_checkpoint_path", required=True, help="Karlo 64→256 upsampler .ckpt")
    files.add_argument("--clip_stat_path", help="ViT-L-14_stats.th, a (mean, std) pair (txt2img only)")
    files.add_argument(
        "--text_encoder_path",
        required=True,
        help="local folder with a CLIPTextModelWithProjection and its CLIPTokenizer",
    )
    files.add_argument(
        "--image_encoder_path", help="local folder with a CLIPVisionModelWithProjection (image_variation only)"
    )
    configs = parser.add_argument_group("architecture (optional: sizes are read from the weights)")
    configs.add_argument("--prior_config", help="Karlo prior yaml (e.g. configs/prior_1B_vit_l.yaml)")
    configs.add_argument("--decoder_config", help="Karlo decoder yaml (e.g. configs/decoder_900M_vit_l.yaml)")
    configs.add_argument("--sr_config", help="Karlo upsampler yaml (e.g. configs/improved_sr_64_256_1.4B.yaml)")
    configs.add_argument(
        "--prior_num_heads",
        type=int,
        help="prior attention heads (not readable from the weights; default: the config, else 32)",
    )
    configs.add_argument(
        "--decoder_num_head_channels",
        type=int,
        help="decoder channels per attention head (default: the config, else 64)",
    )
    configs.add_argument(
        "--decoder_image_size", type=int, help="decoder resolution written to its config (default: the config, else 64)"
    )
    configs.add_argument(
        "--sr_image_size", type=int, help="upsampler resolution written to its config (default: 4 × the decoder's, 256)"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--dump_path", required=True, help="folder to write the diffusers pipeline into")
    out.add_argument(
        "--variant",
        choices=[TXT2IMG, IMAGE_VARIATION],
        default=TXT2IMG,
        help="txt2img (karlo-v1-alpha) or image_variation (karlo-v1-alpha-image-variations)",
    )
    out.add_argument("--push_to_hub", action="store_true", help="upload the folder to the Hub afterwards")
    out.add_argument("--hub_model_id", help="Hub repo id for --push_to_hub")
    out.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument(
        "--allow-pickle",
        "--allow_pickle",
        dest="allow_pickle",
        action="store_true",
        help="unpickle checkpoints fully (runs code from the file; only for files you trust)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = convert_karlo_to_diffusers(
            dump_path=args.dump_path,
            variant=args.variant,
            prior_checkpoint_path=args.prior_checkpoint_path,
            decoder_checkpoint_path=args.decoder_checkpoint_path,
            super_res_unet_checkpoint_path=args.super_res_unet_checkpoint_path,
            clip_stat_path=args.clip_stat_path,
            text_encoder_path=args.text_encoder_path,
            image_encoder_path=args.image_encoder_path,
            prior_config=args.prior_config,
            decoder_config=args.decoder_config,
            sr_config=args.sr_config,
            prior_num_heads=args.prior_num_heads,
            decoder_num_head_channels=args.decoder_num_head_channels,
            decoder_image_size=args.decoder_image_size,
            sr_image_size=args.sr_image_size,
            allow_pickle=args.allow_pickle,
            push_to_hub=args.push_to_hub,
            hub_model_id=args.hub_model_id,
            private=args.private,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
