"""
Assemble the stage outputs (CLIP, prior, decoder, upsampler) into one pipeline folder that both
``UnCLIPPipeline.from_pretrained`` and ``UnCLIPImageVariationPipeline.from_pretrained`` load.

    python training/assemble_pipeline.py --clip_dir runs/clip --prior_dir runs/prior --decoder_dir runs/decoder \
        --super_res_dir runs/superres --output_dir runs/pipeline --decoder_guidance_scale 4

``UnCLIPPipeline.save_pretrained`` writes only its own components, so the image encoder and feature extractor are
saved next to them and added to ``model_index.json`` (the text-to-image pipeline ignores them). The model's default
sampling settings go to ``sampling_defaults.json`` (keyword arguments of ``UnCLIPPipeline.__call__``) and its model
card.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on a shared CPU

import argparse
import json
import sys

from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import common
from unclip_pipelines import UnCLIPImageVariationPipeline, UnCLIPPipeline, UnCLIPScheduler, UnCLIPTextProjModel

SAMPLING_DEFAULTS_FILE = "sampling_defaults.json"
EXTRA_COMPONENTS = {
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip_dir", required=True, help="train_clip.py output")
    parser.add_argument("--prior_dir", required=True, help="train_prior.py output")
    parser.add_argument("--decoder_dir", required=True, help="train_decoder.py output")
    parser.add_argument("--super_res_dir", help="train_superres.py output (none: a decoder-resolution model)")
    parser.add_argument("--output_dir", required=True)
    sampling = parser.add_argument_group("default sampling settings stored with the model")
    sampling.add_argument("--prior_num_inference_steps", type=int, default=25)
    sampling.add_argument("--decoder_num_inference_steps", type=int, default=25)
    sampling.add_argument("--super_res_num_inference_steps", type=int, default=7)
    sampling.add_argument("--prior_guidance_scale", type=float, default=4.0)
    sampling.add_argument("--decoder_guidance_scale", type=float, default=4.0)
    parser.add_argument("--description", default="")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id")
    parser.add_argument("--hub_token")
    return parser.parse_args(argv)


def sampling_defaults(args) -> dict:
    keys = ("prior_num_inference_steps", "decoder_num_inference_steps", "super_res_num_inference_steps",
            "prior_guidance_scale", "decoder_guidance_scale")
    return {key: getattr(args, key) for key in keys}


def load_sampling_defaults(folder: str) -> dict:
    """The sampling settings stored with an assembled model (``{}`` when there are none)."""
    path = os.path.join(folder, SAMPLING_DEFAULTS_FILE)
    return json.load(open(path, encoding="utf-8")) if os.path.isfile(path) else {}


def _optional(cls, folder: str | None, name: str):
    return cls.from_pretrained(folder, subfolder=name) if folder and os.path.isdir(os.path.join(folder, name)) else None


def assemble(args) -> UnCLIPPipeline:
    clip = common.load_clip(args.clip_dir)
    reference = common.weights_hash(clip["text_encoder"])
    for stage_dir in (args.prior_dir, args.decoder_dir):
        if os.path.isdir(os.path.join(stage_dir, "text_encoder")):
            stage_text = common.load_clip(stage_dir, image_side=False)["text_encoder"]
            if common.weights_hash(stage_text) != reference:
                raise ValueError(f"{stage_dir} was trained with another CLIP text encoder than {args.clip_dir}.")
    super_res_first = _optional(UNet2DModel, args.super_res_dir, "super_res_first")
    pipe = UnCLIPPipeline(
        prior=PriorTransformer.from_pretrained(args.prior_dir, subfolder="prior"),
        decoder=UNet2DConditionModel.from_pretrained(args.decoder_dir, subfolder="decoder"),
        text_encoder=clip["text_encoder"],
        tokenizer=clip["tokenizer"],
        text_proj=UnCLIPTextProjModel.from_pretrained(args.decoder_dir, subfolder="text_proj"),
        super_res_first=super_res_first,
        super_res_last=_optional(UNet2DModel, args.super_res_dir, "super_res_last"),
        prior_scheduler=UnCLIPScheduler.from_pretrained(args.prior_dir, subfolder="prior_scheduler"),
        decoder_scheduler=UnCLIPScheduler.from_pretrained(args.decoder_dir, subfolder="decoder_scheduler"),
        super_res_scheduler=_optional(UnCLIPScheduler, args.super_res_dir, "super_res_scheduler"),
    )
    pipe.save_pretrained(args.output_dir)
    for name in EXTRA_COMPONENTS:
        clip[name].save_pretrained(os.path.join(args.output_dir, name))
    index_path = os.path.join(args.output_dir, "model_index.json")
    index = json.load(open(index_path, encoding="utf-8"))
    json.dump({**index, **EXTRA_COMPONENTS}, open(index_path, "w", encoding="utf-8"), indent=2, sort_keys=True)
    defaults = sampling_defaults(args)
    with open(os.path.join(args.output_dir, SAMPLING_DEFAULTS_FILE), "w", encoding="utf-8") as handle:
        json.dump(defaults, handle, indent=2)
    size = (super_res_first.config.sample_size if super_res_first else pipe.decoder.config.sample_size)
    args.description = (
        f"{args.description}\n\nOutput: {size} px. Also loads as `UnCLIPImageVariationPipeline`. Default sampling "
        f"settings (`{SAMPLING_DEFAULTS_FILE}`):\n\n```python\nimage = pipe(prompt, **{defaults}).images[0]\n```\n"
    )
    common.write_card(args.output_dir, pipe, description=args.description)
    return pipe


def check_loads(folder: str) -> None:
    """Both pipelines load the folder (raises otherwise)."""
    UnCLIPPipeline.from_pretrained(folder)
    UnCLIPImageVariationPipeline.from_pretrained(folder)


def main(argv=None) -> str:
    args = parse_args(argv)
    pipe = assemble(args)
    check_loads(args.output_dir)
    print(f"assembled {args.output_dir}: loads as UnCLIPPipeline and UnCLIPImageVariationPipeline")
    if args.push_to_hub:
        common.push_folder(args, args.output_dir, pipe, args.description)
    return args.output_dir


if __name__ == "__main__":
    main()
