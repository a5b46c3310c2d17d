"""Generate images for Shapes World prompts with a pipeline and score them with the judge (``unclip evaluate``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .evaluate import EvaluationReport, evaluate_images


def image_generators(seed: int, prompt_index: int, images_per_prompt: int) -> list[torch.Generator]:
    """One generator per image, seeded from (seed, prompt index, image index): results do not depend on batching."""
    return [
        torch.Generator("cpu").manual_seed(seed * 1_000_003 + prompt_index * 1_000 + k)
        for k in range(images_per_prompt)
    ]


def generate_for_prompts(
    pipe,
    prompts: Sequence[str],
    images_per_prompt: int = 4,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    **call_kwargs,
) -> dict[str, list]:
    """``{prompt: [PIL images]}``, generated ``batch_size`` images at a time with per-image seeds."""
    per_batch = max(1, batch_size // images_per_prompt)
    results: dict[str, list] = {}
    starts = range(0, len(prompts), per_batch)
    for start in tqdm(starts, desc="generating", disable=not progress):
        chunk = list(prompts[start : start + per_batch])
        generators = [g for i in range(len(chunk)) for g in image_generators(seed, start + i, images_per_prompt)]
        images = pipe(chunk, num_images_per_prompt=images_per_prompt, generator=generators, **call_kwargs).images
        for i, prompt in enumerate(chunk):
            results.setdefault(prompt, []).extend(images[i * images_per_prompt : (i + 1) * images_per_prompt])
    return results


def run_evaluation(
    pipe,
    prompts: Sequence[str],
    images_per_prompt: int = 4,
    seed: int = 0,
    batch_size: int = 16,
    output_dir: str | None = None,
    save_images: bool = False,
    progress: bool = True,
    **call_kwargs,
) -> EvaluationReport:
    """Generate, judge, and (with ``output_dir``) write ``evaluation.json`` and ``evaluation.md`` (and the images)."""
    images = generate_for_prompts(pipe, prompts, images_per_prompt, seed, batch_size, progress, **call_kwargs)
    report = evaluate_images(images)
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        report.to_json(os.path.join(output_dir, "evaluation.json"))
        with open(os.path.join(output_dir, "evaluation.md"), "w", encoding="utf-8") as handle:
            handle.write(report.to_markdown())
        if save_images:
            folder = os.path.join(output_dir, "images")
            os.makedirs(folder, exist_ok=True)
            for index, prompt in enumerate(images):
                for k, image in enumerate(images[prompt]):
                    image.save(os.path.join(folder, f"{index:04d}_{k}.png"))
    return report
