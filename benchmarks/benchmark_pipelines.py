"""Seconds per image of unclip_pipelines.UnCLIPPipeline vs diffusers' deprecated UnCLIPPipeline, same tiny weights.

    python benchmarks/benchmark_pipelines.py [--repeats 5] [--batch 1]

Both pipelines hold the very same module objects; steps are Karlo's defaults (25 prior, 25 decoder, 7 super-res).
Prints a markdown table and the max abs difference of the images (injected latents, same generator).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from diffusers import UnCLIPScheduler as DeprecatedUnCLIPScheduler
from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline as DeprecatedUnCLIPPipeline
from diffusers.utils import logging

from unclip_pipelines import UnCLIPPipeline
from unclip_pipelines.tiny import tiny_unclip_components


def time_calls(pipe, prompts, repeats, latents):
    seconds = []
    for i in range(repeats):
        start = time.perf_counter()
        pipe(prompts, generator=torch.Generator().manual_seed(i), output_type="np", **latents)
        seconds.append((time.perf_counter() - start) / len(prompts))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    logging.set_verbosity_error()
    torch.set_num_threads(2)

    components = tiny_unclip_components()
    ours = UnCLIPPipeline(**components)
    legacy = {k: v for k, v in components.items() if not k.startswith(("super_res_2", "super_res_3"))}
    for name in ("prior_scheduler", "decoder_scheduler", "super_res_scheduler"):
        legacy[name] = DeprecatedUnCLIPScheduler.from_config(legacy[name].config)
    theirs = DeprecatedUnCLIPPipeline(**legacy)
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)

    prompts = ["horse"] * args.batch
    g = torch.Generator().manual_seed(0)
    latents = {
        "prior_latents": torch.randn(args.batch, 32, generator=g),
        "decoder_latents": torch.randn(args.batch, 3, 32, 32, generator=g),
        "super_res_latents": torch.randn(args.batch, 3, 128, 128, generator=g),
    }
    # the first calls double as warm-up
    a = ours(prompts, generator=torch.Generator().manual_seed(0), output_type="np", **latents).images
    b = theirs(prompts, generator=torch.Generator().manual_seed(0), output_type="np", **latents).images

    rows = []
    # alternate to spread any background load evenly over both
    times = {"unclip_pipelines.UnCLIPPipeline": [], "diffusers (deprecated) UnCLIPPipeline": []}
    for _ in range(args.repeats):
        times["unclip_pipelines.UnCLIPPipeline"] += time_calls(ours, prompts, 1, latents)
        times["diffusers (deprecated) UnCLIPPipeline"] += time_calls(theirs, prompts, 1, latents)
    for name, seconds in times.items():
        rows.append(f"| {name} | {statistics.median(seconds):.3f} | {min(seconds):.3f} | {max(seconds):.3f} |")
    print(f"tiny components, 25/25/7 steps, batch {args.batch}, {args.repeats} runs, torch threads 2")
    print("| pipeline | median s/image | min | max |\n| --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"max abs difference of the images: {np.abs(a - b).max():.2e}")


if __name__ == "__main__":
    main()
