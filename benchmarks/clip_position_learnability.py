"""Can the CLIP image tower of ``train_clip.py`` learn *where* an object is, when trained to say exactly that?

    python benchmarks/clip_position_learnability.py --position-embedding-std 0.02 0.3 1.0

Renders single-object Shapes World scenes that name a position ("... on the left", "at the top", "in the center",
...), and trains a fresh image tower (``CLIPVisionModelWithProjection`` at ``train_clip.py``'s default size, or
``--clip``'s config) with a linear head to classify the position from the image embedding: supervised, no text
tower. It prints held-out accuracy every ``--eval-every`` steps for each initial std of the tower's position
embeddings (transformers' CLIP init: 0.02; chance: 0.2). A tower that cannot learn this supervised cannot learn it
from captions either, so neither can the prior and decoder built on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import common  # noqa: E402
from unclip_pipelines.shapes import parse_caption, render_scene, sample_scene  # noqa: E402

POSITIONS = ("on the left", "on the right", "at the top", "at the bottom", "in the center")


def position_renders(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``uint8 (num, 3, 128, 128)`` renders of single objects with a named position, and the position's index."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    while len(images) < num:
        scene = sample_scene(rng)
        parsed = parse_caption(scene.caption)
        if parsed.relation is None and parsed.objects[0].position in POSITIONS:
            images.append(np.asarray(render_scene(scene, 128).convert("RGB")))
            labels.append(POSITIONS.index(parsed.objects[0].position))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), torch.tensor(labels)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--position-embedding-std", type=float, nargs="+", default=[0.02, 0.3, 1.0])
    parser.add_argument("--clip", help="a train_clip.py output or pipeline folder whose image tower config to use")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--num-train", type=int, default=2500)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the results here as JSON")
    args = parser.parse_args(argv)

    if args.clip:
        config = CLIPVisionModelWithProjection.from_pretrained(os.path.join(args.clip, "image_encoder")).config
    else:  # train_clip.py's defaults
        config = CLIPVisionConfig(hidden_size=128, intermediate_size=512, projection_dim=128, num_hidden_layers=4,
                                  num_attention_heads=4, image_size=64, patch_size=8)
    images, labels = position_renders(args.num_train + args.num_test, args.seed)
    size = config.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    pixels = common.clip_pixels(processor, images).float() / 255
    pixels = (pixels - pixels.mean((0, 2, 3), keepdim=True)) / pixels.std((0, 2, 3), keepdim=True).clamp(min=1e-3)
    train, test = slice(0, args.num_train), slice(args.num_train, None)

    results = {}
    for std in args.position_embedding_std:
        torch.manual_seed(args.seed)
        tower = CLIPVisionModelWithProjection(config)
        with torch.no_grad():
            tower.vision_model.embeddings.position_embedding.weight.normal_(0.0, std)
        head = torch.nn.Linear(config.projection_dim, len(POSITIONS))
        optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=args.learning_rate)
        generator = torch.Generator().manual_seed(args.seed)
        curve = {}
        for step in range(1, args.steps + 1):
            batch = torch.randint(0, args.num_train, (args.batch_size,), generator=generator)
            loss = F.cross_entropy(head(tower(pixel_values=pixels[train][batch]).image_embeds), labels[train][batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % args.eval_every == 0 or step == args.steps:
                with torch.no_grad():
                    predicted = head(tower(pixel_values=pixels[test]).image_embeds).argmax(-1)
                curve[step] = round((predicted == labels[test]).float().mean().item(), 3)
                print(f"position embedding std {std}: step {step}, held-out accuracy {curve[step]}", flush=True)
        results[str(std)] = curve
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "held_out_accuracy": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
