"""
Train the whole embedded unCLIP stack on the Shapes World from scratch, in one command:
dataset -> CLIP -> CLIP embeddings -> prior -> decoder -> upsampler -> assembled pipeline -> evaluation.

    python training/train_shapes_world.py --output_dir runs/shapes            # ~85 min on 2 CPU cores
    python training/train_shapes_world.py --output_dir /tmp/smoke --quick     # a smoke test, ~2 min

Each stage has a minute budget (``--<stage>_minutes``) and extra flags for its script (``--<stage>_args "..."``,
e.g. ``--decoder_args "--learning_rate 2e-3 --snr_gamma 5"``). A finished stage (its ``train_summary.json`` exists) is
skipped when the command is run again, and an interrupted one resumes from its latest checkpoint, so the command can
simply be re-run. Stage logs go to ``<output_dir>/logs/<stage>.log``, timings to ``timings.json``, the judge's report
to ``eval/report.md`` / ``report.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on a shared CPU

import argparse
import contextlib
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import assemble_pipeline, common, train_clip, train_decoder, train_prior, train_superres

STAGES = ("clip", "prior", "decoder", "superres")
# today's defaults (about 85 min here on 2 cores with the evaluation; the shipped, fourth model was trained with them
# but --mixed_precision no --decoder_minutes 40 --superres_minutes 9
# and without --hard_negative_phrase_words, see README.md). The CLIP is the layout CLIP of
# training/README.md: 16-px patches (5877 updates in the fourth model's 24 minutes), hard negatives that move or swap
# objects, in both directions; it needs about 4000-5000 updates to leave the plateau where it cannot tell positions
# apart. Its hard negatives include relations on the other axis ("left of" / "below", --hard_negative_phrase_words):
# the fourth model's CLIP, without them, cannot tell those apart and its decoder draws a quarter of its pairs turned.
# The decoder has no Min-SNR weighting: with it the decoder ignores where the embedding places objects
# (training/README.md).
DEFAULT_MINUTES = {"clip": 24.0, "prior": 7.0, "decoder": 43.0, "superres": 6.0}
# ``--mixed_precision auto``: bf16 autocast for the convolutional U-Nets where the hardware computes bf16 natively.
# On this machine's CPU (AMX; short runs of each script, training/README.md) it trains the decoder at 68 samples/s
# instead of 52 and the upsampler at 123 instead of 68, while the small CLIP slows down (184 samples/s instead of
# 239), so the transformers stay in float32. The upsampler's 6 bf16 minutes made 653 updates, its former 9 float32
# ones 585.
AUTO_BF16_STAGES = ("decoder", "superres")
DEFAULT_ARGS = {
    "clip": "--patch_size 16 --hard_negative_edits 2 --hard_negative_phrase_words 4 --hard_negative_images "
    "--hard_negative_top_k 2 "
    "--position_embedding_std 1.0 --train_batch_size 64 --learning_rate 1e-3",
    "prior": "",
    "decoder": "",
    "superres": "",
}
QUICK_ARGS = {
    "clip": "--hidden_size 32 --num_hidden_layers 1 --train_batch_size 16",
    "prior": "--num_layers 1 --attention_head_dim 8 --train_batch_size 16 --validation_num_inference_steps 3",
    "decoder": "--block_out_channels 16 32 --layers_per_block 1 --attention_head_dim 8 --cross_attention_dim 32 "
    "--train_batch_size 8 --validation_num_inference_steps 3 --num_validation_images 2",
    "superres": "--block_out_channels 16 32 --layers_per_block 1 --train_batch_size 8 "
    "--validation_num_inference_steps 2 --num_validation_images 2",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--quick", action="store_true", help="tiny models, 3 steps a stage, 5 prompts: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_images", type=int, default=20000, help="training images (128 px)")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument(
        "--mixed_precision", default="auto", choices=["auto", "no", "fp16", "bf16"],
        help="auto: bf16 for the decoder and upsampler where the GPU or CPU has native bf16 (AMX / AVX512-BF16), "
        "else float32; any other value applies to every stage",
    )
    for stage in STAGES:
        parser.add_argument(f"--{stage}_minutes", type=float, default=DEFAULT_MINUTES[stage])
        parser.add_argument(f"--{stage}_args", default=DEFAULT_ARGS[stage], help=f"extra flags for train_{stage}.py")
    parser.add_argument("--eval_prompts", type=int, default=50, help="stratified Shapes World prompts")
    parser.add_argument("--eval_images_per_prompt", type=int, default=2)
    parser.add_argument(
        "--assemble_args", default="--decoder_guidance_scale 2",
        help="extra flags for assemble_pipeline.py (sampling settings; decoder guidance 2 won a sweep on validation "
        "prompts, see training/README.md)",
    )
    parser.add_argument("--force", action="store_true", help="re-run stages that already finished")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_images, args.eval_prompts, args.eval_images_per_prompt = min(args.num_images, 96), 5, 1
    return args


class Tee:
    """Writes to several streams (the console and a stage log)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
            stream.flush()

    def flush(self):
        for stream in self.streams:
            stream.flush()


def run_stage(args, name: str, fn, timings: dict):
    """Run ``fn()`` with its stdout also logged to ``logs/<name>.log``; record its wall-clock time."""
    log_dir = Path(args.output_dir, "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log_dir / f"{name}.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(Tee(sys.stdout, log)):
        print(f"=== {name} ({time.strftime('%H:%M:%S')}) ===")
        result = fn()
        print(f"=== {name} done in {time.time() - start:.0f}s ===")
    timings[name] = round(time.time() - start, 1)
    Path(args.output_dir, "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return result


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AMX / AVX512-BF16
    (other CPUs have no bf16 instructions, so autocast there would not pay; measure before forcing it)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def stage_precision(args, stage: str) -> str:
    if args.mixed_precision != "auto":
        return args.mixed_precision
    return "bf16" if stage in AUTO_BF16_STAGES and native_bf16() else "no"


def stage_argv(args, stage: str, data_dir: str, clip_dir: str) -> list[str]:
    argv = [
        "--train_data_dir", data_dir, "--output_dir", os.path.join(args.output_dir, stage), "--seed", str(args.seed),
        "--report_to", "none", "--mixed_precision", stage_precision(args, stage), "--resume_from_checkpoint", "latest",
    ]
    if stage in ("prior", "decoder"):
        argv += ["--pretrained_model_name_or_path", clip_dir]
    if args.quick:
        argv += ["--max_train_steps", "3", "--validation_steps", "3", "--checkpointing_steps", "3",
                 "--logging_steps", "1", "--validation_samples", "8"] + shlex.split(QUICK_ARGS[stage])
    else:
        argv += ["--max_train_steps", "1000000", "--max_train_minutes", str(getattr(args, f"{stage}_minutes"))]
    return argv + shlex.split(getattr(args, f"{stage}_args"))


def evaluate(args, pipeline_dir: str) -> dict:
    """Judge the assembled pipeline on stratified prompts with its own sampling defaults (as ``unclip evaluate``)."""
    from unclip_pipelines import UnCLIPPipeline
    from unclip_pipelines.shapes import evaluate_images, sample_eval_prompts
    from unclip_pipelines.shapes.benchmark import generate_for_prompts

    pipe = UnCLIPPipeline.from_pretrained(pipeline_dir).to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    settings = assemble_pipeline.load_sampling_defaults(pipeline_dir)
    if args.quick:
        settings.update(prior_num_inference_steps=3, decoder_num_inference_steps=3, super_res_num_inference_steps=2)
    prompts = sample_eval_prompts(args.eval_prompts, seed=args.seed)
    start = time.time()
    images = generate_for_prompts(
        pipe, prompts, args.eval_images_per_prompt, seed=args.seed, progress=False, **settings
    )
    seconds_per_image = (time.time() - start) / (len(prompts) * args.eval_images_per_prompt)
    report = evaluate_images(images)
    folder = Path(args.output_dir, "eval")
    report.to_json(folder / "report.json")
    (folder / "report.md").write_text(report.to_markdown())
    first = torch.stack([torch.from_numpy(np.array(v[0].convert("RGB"))).permute(2, 0, 1) for v in images.values()])
    cols = min(10, len(first))
    common.save_grid([first[k : k + cols] for k in range(0, len(first) - cols + 1, cols)], str(folder / "samples.png"))
    (folder / "prompts.txt").write_text("\n".join(images) + "\n")
    print(report.to_markdown())
    print(f"{seconds_per_image:.2f} s per image ({first.shape[-1]} px)")
    return {"overall": report.overall.accuracy, "category_mean": report.category_mean,
            "seconds_per_image": round(seconds_per_image, 2)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    timings_path = Path(args.output_dir, "timings.json")
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    data_dir = os.path.join(args.output_dir, "data")
    clip_dir = os.path.join(args.output_dir, "clip")

    def done(folder: str, marker: str) -> bool:
        return not args.force and os.path.isfile(os.path.join(folder, marker))

    if not done(data_dir, "metadata.jsonl"):
        from unclip_pipelines.shapes import write_dataset

        def make_dataset():  # written aside, then moved: an interrupted write never looks finished
            shutil.rmtree(data_dir + ".tmp", ignore_errors=True)
            write_dataset(data_dir + ".tmp", args.num_images, args.image_size, args.seed)
            shutil.rmtree(data_dir, ignore_errors=True)
            os.replace(data_dir + ".tmp", data_dir)

        run_stage(args, "dataset", make_dataset, timings)
    if not done(clip_dir, "train_summary.json"):
        run_stage(args, "clip", lambda: train_clip.main(stage_argv(args, "clip", data_dir, clip_dir)), timings)

    def precompute():
        stage_args = train_prior.parse_args(stage_argv(args, "prior", data_dir, clip_dir))
        return common.clip_embeddings(stage_args, common.ImageTextData(stage_args), common.load_clip(clip_dir))["path"]

    run_stage(args, "clip_embeddings", precompute, timings)
    modules = {"prior": train_prior, "decoder": train_decoder, "superres": train_superres}
    for stage, module in modules.items():
        if not done(os.path.join(args.output_dir, stage), "train_summary.json"):
            run_stage(args, stage, lambda m=module, s=stage: m.main(stage_argv(args, s, data_dir, clip_dir)), timings)

    pipeline_dir = os.path.join(args.output_dir, "pipeline")
    assemble_argv = [
        "--clip_dir", clip_dir, "--prior_dir", os.path.join(args.output_dir, "prior"),
        "--decoder_dir", os.path.join(args.output_dir, "decoder"),
        "--super_res_dir", os.path.join(args.output_dir, "superres"), "--output_dir", pipeline_dir,
        "--description", "The embedded Shapes World model, trained from scratch by training/train_shapes_world.py.",
    ] + shlex.split(args.assemble_args)
    run_stage(args, "assemble", lambda: assemble_pipeline.main(assemble_argv), timings)
    result = run_stage(args, "evaluate", lambda: evaluate(args, pipeline_dir), timings)
    summary = {
        "stages": {s: json.loads(Path(args.output_dir, s, "train_summary.json").read_text()) for s in STAGES},
        "evaluation": result, "timings_seconds": timings, "total_minutes": round(sum(timings.values()) / 60, 1),
    }
    Path(args.output_dir, "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"pipeline: {pipeline_dir}\nsummary: {json.dumps(summary['evaluation'])}, {summary['total_minutes']} min")
    return summary


if __name__ == "__main__":
    main()
