"""How well a trained CLIP tells a Shapes World image's caption from the captions one or two words away.

    python benchmarks/clip_caption_neighbours.py --data_dir runs/shapes/data --clip runs/a/clip runs/b/clip

Renders ``--num-images`` fresh scenes (training distribution), embeds them and every caption of the dataset's
``metadata.jsonl`` with each CLIP folder (``train_clip.py`` output or a pipeline folder), and prints: top-1 accuracy
over all dataset captions, the rate at which the own caption scores above *all* its neighbours (captions with as many
words differing in at most ``--max-edits`` substitutions or reordered; ``train_clip.py --hard_negative_edits``), and
the mean rate at which it beats a single neighbour.

Then a *layout* probe on fresh scenes whose caption names a position or a relation: each caption against its mirror
("on the left" <-> "on the right", "at the top" <-> "at the bottom", "A to the left of B" <-> "A to the right of B",
"above" <-> "below"; relations also reflected across the diagonals, "left of" <-> "above" and "left of" <->
"below"), and each render against a render of the mirrored caption. It prints, per kind, how often the
image scores its own caption above the mirrored one, how often the caption scores its own render above the mirrored
render (chance: 0.5 for both), the text cosine of caption and mirror (pooled, and of the text encoder's token states
at the changed word and after it, which the decoder attends to), and the image cosine of two renders of one
caption against that of a render and a mirrored render. A CLIP that encodes no layout scores 0.5 / 0.5 with equal
image cosines; then no prior or decoder built on its embeddings can place objects.
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
from unclip_pipelines.shapes import (  # noqa: E402
    ObjectPhrase,
    ParsedCaption,
    parse_caption,
    render_scene,
    sample_scene,
    scene_from_caption,
)
from unclip_pipelines.shapes.world import MIRRORED_RELATION  # noqa: E402

MIRRORED_POSITION = {"on the left": "on the right", "on the right": "on the left", "at the top": "at the bottom",
                     "at the bottom": "at the top"}


#: Relations reflected across the image's diagonal (x <-> y: "left of" <-> "above") and its anti-diagonal
#: ("left of" <-> "below"). A CLIP whose only layout feature is "first object to the lower left or the upper right"
#: passes the mirror probe yet cannot tell a relation from its anti-diagonal reflection.
REFLECTED_RELATION = {
    "relation_diagonal": {"to the left of": "above", "above": "to the left of", "to the right of": "below",
                          "below": "to the right of"},
    "relation_antidiagonal": {"to the left of": "below", "below": "to the left of", "to the right of": "above",
                              "above": "to the right of"},
}
LAYOUT_KINDS = ("position", "relation", *REFLECTED_RELATION)


def mirrored(caption: str) -> tuple[str, str] | None:
    """``(kind, the caption with its position or relation mirrored)``, or ``None`` when it names neither."""
    parsed = parse_caption(caption)
    if parsed.relation is not None:
        return "relation", ParsedCaption(parsed.objects, MIRRORED_RELATION[parsed.relation]).text
    phrase = parsed.objects[0]
    if phrase.position in MIRRORED_POSITION:
        flipped = ObjectPhrase(phrase.colour, phrase.shape, phrase.size, MIRRORED_POSITION[phrase.position])
        return "position", ParsedCaption((flipped,)).text
    return None


def counterparts(caption: str) -> dict[str, str]:
    """The caption's counterpart per layout kind it has: mirrored (:func:`mirrored`) and, for relations, reflected."""
    found = mirrored(caption)
    if found is None:
        return {}
    out = {found[0]: found[1]}
    parsed = parse_caption(caption)
    if parsed.relation is not None:
        out.update({kind: ParsedCaption(parsed.objects, table[parsed.relation]).text
                    for kind, table in REFLECTED_RELATION.items()})
    return out


def layout_probe(parts: dict, num_scenes: int, seed: int) -> dict:
    """The layout measurements of the module docstring, per kind (``LAYOUT_KINDS``)."""
    rng = np.random.default_rng(seed)
    rows = {kind: [] for kind in LAYOUT_KINDS}
    while min(len(v) for v in rows.values()) < num_scenes:
        scene = sample_scene(rng)
        for kind, counterpart in counterparts(scene.caption).items():
            if len(rows[kind]) < num_scenes:
                rows[kind].append((scene, counterpart))

    def embed(captions, images):
        with torch.no_grad():
            text, hidden, mask = common.encode_text(parts["text_encoder"], parts["tokenizer"], captions)
            pixels = parts["feature_extractor"](images=images, return_tensors="pt").pixel_values
            image = parts["image_encoder"](pixel_values=pixels).image_embeds
        return F.normalize(text, dim=-1), F.normalize(image, dim=-1), hidden, mask

    def token_cosines(captions, mirrors, hidden, mirror_hidden, mask):
        """Cosine of the two captions' token states at the (first) changed word, and over the tokens after it."""
        at, after = [], []
        for row, (caption, mirror) in enumerate(zip(captions, mirrors)):
            ids = parts["tokenizer"]([caption, mirror]).input_ids
            changed = next(i for i, (a, b) in enumerate(zip(*ids)) if a != b)
            cosine = F.cosine_similarity(hidden[row], mirror_hidden[row], dim=-1)[: int(mask[row].sum())]
            at.append(cosine[changed].item())
            after.append(cosine[changed + 1 :].mean().item())
        return float(np.mean(at)), float(np.mean(after))

    results = {}
    for kind, pairs in rows.items():
        captions = [scene.caption for scene, _ in pairs]
        mirrors = [mirror for _, mirror in pairs]
        own_text, own_image, hidden, mask = embed(captions, [render_scene(scene, 128) for scene, _ in pairs])
        mirror_text, mirror_image, mirror_hidden, _ = embed(
            mirrors, [render_scene(scene_from_caption(rng, m), 128) for m in mirrors]
        )
        again_image = embed(captions, [render_scene(scene_from_caption(rng, c), 128) for c in captions])[1]
        at_word, after_word = token_cosines(captions, mirrors, hidden, mirror_hidden, mask)
        own = (own_image * own_text).sum(-1)
        results[kind] = {
            "image_prefers_own_caption": ((own > (own_image * mirror_text).sum(-1)).float().mean().item()),
            "caption_prefers_own_image": ((own > (mirror_image * own_text).sum(-1)).float().mean().item()),
            "text_cosine_to_mirror": (own_text * mirror_text).sum(-1).mean().item(),
            "token_state_cosine_at_changed_word": at_word,
            "token_state_cosine_after_changed_word": after_word,
            "image_cosine_same_caption": (own_image * again_image).sum(-1).mean().item(),
            "image_cosine_to_mirror": (own_image * mirror_image).sum(-1).mean().item(),
            "scenes": len(pairs),
        }
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="the training data (imagefolder with metadata.jsonl)")
    parser.add_argument("--clip", nargs="+", required=True, help="CLIP folders to compare")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--max-edits", type=int, default=2)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--layout-scenes", type=int, default=100, help="scenes per kind for the layout probe (0: off)")
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
        if args.layout_scenes:
            results[folder]["layout"] = layout_probe(parts, args.layout_scenes, args.seed)
        print(folder, json.dumps(results[folder]))
    return results


if __name__ == "__main__":
    main()
