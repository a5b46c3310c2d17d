"""How two-object images fail, from a saved ``unclip evaluate`` run (no new generation).

    unclip evaluate --num-prompts 200 --images-per-prompt 4 --output-dir runs/eval200
    python benchmarks/pair_failure_modes.py --eval-dir runs/eval200

Every image of a pair prompt (``a C1 S1 RELATION a C2 S2``) lands in exactly one row, in this order:

- ``wrong count``: the judge found other than two objects;
- ``objects not as named``: two objects, but not one of each named colour and shape;
- ``relation holds``: the judge's relation check passes (with its 0.05 W slack);
- ``mirrored``: the mirrored relation holds instead (B RELATION A: the objects swapped sides);
- ``perpendicular``: a relation on the other axis holds (asked "left of", drawn above or below);
- ``right side, off axis``: A is on the named side of B by the judge's offset, but farther off the axis than its
  tolerance (a diagonal layout);
- ``other``: none of these (the objects too close along both axes).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter

from unclip_pipelines.shapes import parse_caption
from unclip_pipelines.shapes.world import JUDGE_SLACK, MIRRORED_RELATION, RELATIONS, relation_holds

MODES = ("wrong count", "objects not as named", "relation holds", "mirrored", "perpendicular",
         "right side, off axis", "other")
HORIZONTAL = ("to the left of", "to the right of")


def on_named_side(relation: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a`` is on ``relation``'s side of ``b`` by the judge's offset, whatever the other axis does."""
    on_axis = (b[0], a[1]) if relation in HORIZONTAL else (a[0], b[1])  # b moved onto a's line along the axis
    return relation_holds(relation, a, on_axis, JUDGE_SLACK)


def failure_mode(caption: str, objects: list[dict]) -> str:
    """The row of the module docstring for one judged image (``objects`` as in ``evaluation.json``)."""
    parsed = parse_caption(caption)
    if parsed.relation is None or len(parsed.objects) != 2:
        raise ValueError(f"{caption!r} is not a pair caption")
    if len(objects) != 2:
        return "wrong count"
    centres = []
    for phrase in parsed.objects:
        match = [o for o in objects if o["colour"] == phrase.colour and o["shape"] == phrase.shape]
        if len(match) != 1:
            return "objects not as named"
        centres.append((match[0]["cx"], match[0]["cy"]))
    a, b = centres
    relation = parsed.relation
    if relation_holds(relation, a, b, JUDGE_SLACK):
        return "relation holds"
    if relation_holds(MIRRORED_RELATION[relation], a, b, JUDGE_SLACK):
        return "mirrored"
    other_axis = [r for r in RELATIONS if (r in HORIZONTAL) != (relation in HORIZONTAL)]
    if any(relation_holds(r, a, b, JUDGE_SLACK) for r in other_axis):
        return "perpendicular"
    if on_named_side(relation, a, b):
        return "right side, off axis"
    return "other"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--eval-dir", required=True,
        help="an `unclip evaluate` output folder (evaluation.json) or train_shapes_world.py's eval folder (report.json)",
    )
    parser.add_argument("--category", default="pair", help="pair or held-out (its pair prompts)")
    args = parser.parse_args(argv)

    names = [n for n in ("evaluation.json", "report.json") if os.path.isfile(os.path.join(args.eval_dir, n))]
    if not names:
        parser.error(f"{args.eval_dir} holds neither evaluation.json nor report.json: pass an evaluation folder")
    with open(os.path.join(args.eval_dir, names[0]), encoding="utf-8") as f:
        report = json.load(f)
    counts: Counter = Counter()
    for row in report["prompts"]:
        if row["category"] != args.category or parse_caption(row["prompt"]).relation is None:
            continue
        for objects in row["objects"]:
            counts[failure_mode(row["prompt"], objects)] += 1
    total = sum(counts.values())
    if not total:
        parser.error(f"no two-object '{args.category}' prompts in {args.eval_dir}")
    print(f"| {args.category} images ({total}) | count | share |\n| --- | ---: | ---: |")
    for mode in MODES:
        print(f"| {mode} | {counts[mode]} | {counts[mode] / total:.2f} |")
    return {"images": total, **{mode: counts[mode] for mode in MODES}}


if __name__ == "__main__":
    main()
