"""The README's image grid: prompts (rows) x seeds (columns) from a model, default: the embedded Shapes World model.

    python benchmarks/make_readme_grid.py [--model DIR] [--output docs/figures/embedded_grid.png]
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from unclip_pipelines.cli import load_pipeline
from unclip_pipelines.shapes.benchmark import generate_for_prompts

PROMPTS = [
    "a red circle",
    "a small blue triangle at the top",
    "a large yellow diamond on the left",
    "a green square to the left of a purple circle",
    "a cyan diamond above a red triangle",
    "a red circle to the left of a blue square",
    "a purple triangle",  # held out of training
    "a yellow square below a blue circle",  # held out of training
]


def grid(images_by_prompt: dict[str, list[Image.Image]], label_width: int = 300) -> Image.Image:
    rows = list(images_by_prompt.items())
    size = rows[0][1][0].size[0]
    columns = len(rows[0][1])
    canvas = Image.new("RGB", (label_width + columns * size, len(rows) * size), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (prompt, images) in enumerate(rows):
        draw.text((6, r * size + size // 2 - 6), prompt, fill="black")
        for c, image in enumerate(images):
            canvas.paste(image, (label_width + c * size, r * size))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--output", default="docs/figures/embedded_grid.png")
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    images = generate_for_prompts(pipe, PROMPTS, args.images_per_prompt, seed=args.seed, batch_size=16)
    grid(images).save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
