"""How well a trained CLIP tells a Shapes World image's caption from the captions one or two words away.

    python benchmarks/clip_caption_neighbours.py --data_dir runs/shapes/data --clip runs/a/clip runs/b/clip

Renders ``--num-images`` fresh scenes (training distribution), embeds them and every caption of the dataset's
``metadata.jsonl`` with each CLIP folder (``train_clip.py`` output or a pipeline folder), and prints: top-1 accuracy
over all dataset captions, the rate at which the own caption scores above *all* its neighbours (captions with as many
words differing in at most ``--max-edits`` substitutions or reordered; ``train_clip.py --hard_negative_edits``), and
the mean rate at which it beats a single neighbour.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import common  # noqa: E402
from training.train_clip import caption_neighbours  # noqa: E402
from unclip_pipelines.shapes import render_scene, sample_scene  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="the training data (imagefolder with metadata.jsonl)")
    parser.add_argument("--clip", nargs="+", required=True, help="CLIP folders to compare")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--max-edits", type=int, default=2)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    with open(os.path.join(args.data_dir, "metadata.jsonl"), encoding="utf-8") as f:
        captions = sorted({json.loads(line)["text"] for line in f})
    index = {caption: i for i, caption in enumerate(captions)}
    neighbours = caption_neighbours(captions, args.max_edits)
    rng = np.random.default_rng(args.seed)
    scenes = [scene for scene in (sample_scene(rng) for _ in range(args.num_images)) if scene.caption in index]
    images = [render_scene(scene, 128) for scene in scenes]
    own = torch.tensor([index[scene.caption] for scene in scenes])
    results = {}
    for folder in args.clip:
        parts = common.load_clip(folder)
        with torch.no_grad():
            text, _, _ = common.encode_text(parts["text_encoder"], parts["tokenizer"], captions)
            pixels = parts["feature_extractor"](images=images, return_tensors="pt").pixel_values
            image = parts["image_encoder"](pixel_values=pixels).image_embeds
        scores = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
        rows = [(r, o) for r, o in enumerate(own.tolist()) if neighbours[o]]
        results[folder] = {
            "top1_over_all_captions": (scores.argmax(1) == own).float().mean().item(),
            "above_all_neighbours": float(np.mean([float(scores[r, o] > scores[r, neighbours[o]].max()) for r, o in rows])),
            "above_one_neighbour": float(np.mean([(scores[r, o] > scores[r, neighbours[o]]).float().mean().item() for r, o in rows])),
            "images": len(scenes),
            "captions": len(captions),
        }
        print(folder, json.dumps(results[folder]))
    return results


if __name__ == "__main__":
    main()
