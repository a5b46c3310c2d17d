"""CLIP re-ranking measured on a saved ``unclip evaluate --save-images`` run (no new generation).

    unclip evaluate --num-prompts 200 --images-per-prompt 4 --output-dir runs/eval200 --save-images
    python benchmarks/rerank_saved_evaluation.py --eval-dir runs/eval200 --num-prompts 200

``rerank=True`` orders each prompt's K images by the cosine of their CLIP image embedding with the prompt's CLIP text
embedding (``UnCLIPPipeline.clip_scores``); this script applies exactly that score to the K saved images of each
prompt and judges the top-ranked one, against the judge's accuracy over all K (what ``rerank=False`` returns).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from PIL import Image

from unclip_pipelines import UnCLIPPipeline
from unclip_pipelines.cli import default_model
from unclip_pipelines.shapes import evaluate_images, sample_eval_prompts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-dir", required=True, help="an `unclip evaluate --save-images` output folder")
    parser.add_argument("--model", help="the model that generated them (default: the embedded model)")
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--prompt-seed", type=int, default=0)
    parser.add_argument("--images-per-prompt", type=int, default=4, help="K: the group that rerank=True orders")
    args = parser.parse_args(argv)

    prompts = list(dict.fromkeys(sample_eval_prompts(args.num_prompts, seed=args.prompt_seed)))  # as run_evaluation
    folder = os.path.join(args.eval_dir, "images")
    pipe = UnCLIPPipeline.from_pretrained(args.model or default_model())
    pipe.require_image_encoder("re-ranking")
    all_images, top_images = {}, {}
    with torch.no_grad():
        for index, prompt in enumerate(prompts):
            names = sorted(n for n in os.listdir(folder) if n.startswith(f"{index:04d}_"))
            if not names:
                raise FileNotFoundError(f"no saved images for prompt {index} ({prompt!r}) in {folder}")
            images = [Image.open(os.path.join(folder, n)).convert("RGB") for n in names]
            pixels = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2) / 255.0
            text = pipe.encode_prompt([prompt] * len(images), pipe.device, 1, False).embeds
            scores = pipe.clip_scores(pixels, text)
            # a prompt drawn twice by the sampler has 2K images (run_evaluation groups them): rank each K apart
            k = args.images_per_prompt
            if len(images) % k:
                raise ValueError(f"prompt {index} has {len(images)} images, not a multiple of {k}")
            all_images[prompt] = images
            top_images[prompt] = [images[g + int(scores[g : g + k].argmax())] for g in range(0, len(images), k)]
    everything, top = evaluate_images(all_images), evaluate_images(top_images)
    result = {
        "prompts": len(prompts),
        "images_per_prompt": args.images_per_prompt,
        "all_images": {"overall": everything.overall.accuracy,
                       **{k: v.accuracy for k, v in everything.categories.items()}},
        "clip_top1": {"overall": top.overall.accuracy, **{k: v.accuracy for k, v in top.categories.items()}},
    }
    print(json.dumps(result, indent=2))
    with open(os.path.join(args.eval_dir, "rerank.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
