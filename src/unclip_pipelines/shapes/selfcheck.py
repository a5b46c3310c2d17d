"""Measure the judge on the world's own renders, clean and degraded (blur, then per-channel Gaussian noise).

Usage::

    python -m unclip_pipelines.shapes.selfcheck --scenes-per-category 60 --seed 1234 --sizes 64 128
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from scipy import ndimage

from .captions import sample_scene
from .judge import judge_image
from .render import render_scene
from .world import CATEGORIES


def degrade(image: np.ndarray, rng: np.random.Generator, sigma: float, noise: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels per channel, then Gaussian noise of std ``noise`` per channel (uint8)."""
    out = np.asarray(image, dtype=np.float64)
    if sigma > 0:
        out = ndimage.gaussian_filter(out, sigma=(sigma, sigma, 0))
    if noise > 0:
        out = out + rng.normal(0.0, noise, out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def judge_accuracy(
    scenes_per_category: int = 60,
    size: int = 128,
    sigma: float = 0.0,
    noise: float = 0.0,
    seed: int = 1234,
    noise_seed: int = 0,
) -> dict[str, float]:
    """
    Fraction of the world's renders the judge calls correct, per category and ``"overall"``.

    The scenes are sampled in ``"eval"`` mode, ``scenes_per_category`` of each category, from ``seed``.
    """
    rng, noise_rng = np.random.default_rng(seed), np.random.default_rng(noise_seed)
    verdicts: dict[str, list[bool]] = defaultdict(list)
    for category in CATEGORIES:
        for _ in range(scenes_per_category):
            scene = sample_scene(rng, mode="eval", category=category)
            image = degrade(np.asarray(render_scene(scene, size=size)), noise_rng, sigma, noise)
            verdicts[category].append(judge_image(image, scene.caption).correct)
    accuracy = {c: float(np.mean(v)) for c, v in verdicts.items()}
    accuracy["overall"] = float(np.mean([x for v in verdicts.values() for x in v]))
    return accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes-per-category", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--sigma", type=float, default=1.5, help="blur of the degraded setting, in pixels")
    parser.add_argument("--noise", type=float, default=12.0, help="noise std of the degraded setting, per channel")
    args = parser.parse_args(argv)

    print("| size | setting | " + " | ".join(CATEGORIES) + " | overall |")
    print("| --- | --- |" + " ---: |" * (len(CATEGORIES) + 1))
    for size in args.sizes:
        settings = [("clean", 0.0, 0.0), (f"blur σ={args.sigma:g} + noise σ={args.noise:g}", args.sigma, args.noise)]
        if size != 128:
            scaled = args.sigma * size / 128
            settings.append((f"blur σ={scaled:g} (scaled) + noise σ={args.noise:g}", scaled, args.noise))
        for name, sigma, noise in settings:
            acc = judge_accuracy(args.scenes_per_category, size, sigma, noise, args.seed)
            cells = " | ".join(f"{acc[c]:.3f}" for c in (*CATEGORIES, "overall"))
            print(f"| {size} | {name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
