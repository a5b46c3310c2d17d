"""Training data of the Shapes World: an on-disk image folder and a fast in-memory batch generator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .captions import sample_scene
from .render import render_scene

METADATA_FILE = "metadata.jsonl"
IMAGES_DIR = "images"


def render_batch(
    rng: np.random.Generator, n: int, size: int = 128, mode: str = "train"
) -> tuple[np.ndarray, list[str]]:
    """
    Sample and render ``n`` scenes in memory (for training loops).

    Args:
        rng: the random generator (advanced in place, so successive calls give new scenes).
        n: the number of scenes.
        size: the image side in pixels.
        mode: the sampling mode of :func:`~.captions.sample_scene` (``"train"`` excludes held-out combinations).

    Returns:
        ``(images, captions)``: a ``uint8`` array of shape ``(n, size, size, 3)`` and the ``n`` captions.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}.")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        scene = sample_scene(rng, mode=mode)
        images[i] = np.asarray(render_scene(scene, size=size))
        captions.append(scene.caption)
    return images, captions


def write_dataset(
    output_dir: str | os.PathLike[str],
    num_images: int,
    size: int = 128,
    seed: int = 0,
    mode: str = "train",
) -> Path:
    """
    Write a Hugging Face ``imagefolder`` dataset of rendered scenes.

    The folder holds ``images/00000.png, ...`` and ``metadata.jsonl`` with one ``{"file_name": "images/00000.png",
    "text": caption}`` line per image, so ``datasets.load_dataset("imagefolder", data_dir=output_dir,
    split="train")`` gives ``image`` and ``text`` columns. The content is a deterministic function of
    ``(num_images, size, seed, mode)``; an existing ``metadata.jsonl`` is overwritten.

    Returns:
        The output directory.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be non-negative, got {num_images}.")
    root = Path(output_dir)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    digits = max(5, len(str(max(num_images - 1, 0))))
    with open(root / METADATA_FILE, "w", encoding="utf-8") as metadata:
        for index in range(num_images):
            scene = sample_scene(rng, mode=mode)
            file_name = f"{IMAGES_DIR}/{index:0{digits}d}.png"
            render_scene(scene, size=size).save(root / file_name)
            metadata.write(json.dumps({"file_name": file_name, "text": scene.caption}) + "\n")
    return root
