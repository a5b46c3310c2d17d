"""Judge accuracy of a Shapes World pipeline against its decoder's training time (issue 3's accuracy-vs-time curve).

    python benchmarks/accuracy_vs_training_time.py --pipeline_dir runs/shapes/pipeline \
        --decoder_run runs/shapes/decoder --checkpoints runs/ckpts/checkpoint-500 runs/ckpts/checkpoint-1000 \
        --num-prompts 50 --images-per-prompt 1

Each checkpoint written by ``training/train_decoder.py`` (``accelerator.save_state``: the trainer's weights and the
EMA as a custom object) replaces the pipeline's ``decoder`` and ``text_proj`` by its EMA weights, as the final save
does; prior and upsampler stay those of the finished run. The final pipeline itself is the last point. Training
minutes come from the decoder run's ``logs.jsonl``. Prints a markdown table and writes ``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import re

import torch

from unclip_pipelines import UnCLIPPipeline
from unclip_pipelines.shapes import sample_eval_prompts
from unclip_pipelines.shapes.benchmark import run_evaluation


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline_dir", required=True, help="the assembled pipeline of the finished run")
    parser.add_argument("--decoder_run", required=True, help="the decoder's --output_dir (for logs.jsonl)")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="checkpoint-N folders of the decoder")
    parser.add_argument("--num-prompts", type=int, default=50)
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument("--prompt-seed", type=int, default=0)
    parser.add_argument("--output", default="accuracy_vs_training_time.json")
    return parser.parse_args(argv)


def minutes_at(decoder_run: str, step: int) -> float:
    """Training minutes logged at ``step`` (the last log line at or before it)."""
    minutes = 0.0
    with open(os.path.join(decoder_run, "logs.jsonl"), encoding="utf-8") as handle:
        for line in handle:
            entry = json.loads(line)
            if "minutes" in entry and entry.get("step", 0) <= step:
                minutes = entry["minutes"]
    return minutes


def load_ema_decoder(pipe: UnCLIPPipeline, checkpoint: str) -> None:
    """Copy the checkpoint's EMA weights into ``pipe.decoder`` then ``pipe.text_proj`` (the trainer's order)."""
    path = os.path.join(checkpoint, "custom_checkpoint_0.pkl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{checkpoint} has no EMA state (custom_checkpoint_0.pkl): was it trained --no-use_ema?")
    shadow = torch.load(path, map_location="cpu", weights_only=True)["shadow_params"]
    params = list(pipe.decoder.parameters()) + list(pipe.text_proj.parameters())
    if len(shadow) != len(params) or any(s.shape != p.shape for s, p in zip(shadow, params)):
        raise ValueError(f"{checkpoint}'s EMA does not match this pipeline's decoder and text_proj")
    with torch.no_grad():
        for param, value in zip(params, shadow):
            param.copy_(value)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    prompts = sample_eval_prompts(args.num_prompts, seed=args.prompt_seed)
    points = [(int(re.search(r"(\d+)$", c.rstrip("/")).group(1)), c) for c in args.checkpoints]
    with open(os.path.join(args.decoder_run, "train_summary.json"), encoding="utf-8") as handle:
        final_step = json.load(handle)["steps"]
    points.append((final_step, None))
    rows = []
    for step, checkpoint in sorted(points):
        pipe = UnCLIPPipeline.from_pretrained(args.pipeline_dir)
        pipe.set_progress_bar_config(disable=True)
        if checkpoint is not None:
            load_ema_decoder(pipe, checkpoint)
        settings = {k: v for k, v in pipe.sampling_defaults.items()}
        report = run_evaluation(pipe, prompts, images_per_prompt=args.images_per_prompt, progress=False, **settings)
        row = {"decoder_step": step, "decoder_minutes": minutes_at(args.decoder_run, step),
               "overall": report.overall.accuracy,
               **{name: result.accuracy for name, result in report.categories.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=2)
    names = [k for k in rows[0] if k not in ("decoder_step", "decoder_minutes")]
    print("| decoder step | minutes | " + " | ".join(names) + " |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in names) + " |")
    for row in rows:
        print(f"| {row['decoder_step']} | {row['decoder_minutes']:.1f} | "
              + " | ".join(f"{row[n]:.2f}" for n in names) + " |")
    return rows


if __name__ == "__main__":
    main()
