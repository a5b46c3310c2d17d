"""Shared fixtures of the Shapes World tests: a fixed evaluation scene set, its renders, and a degradation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import ndimage

from unclip_pipelines.shapes import CATEGORIES, Scene, render_scene, sample_scene

#: Scenes per category in the judge tests (5 categories → 300 scenes).
SCENES_PER_CATEGORY = 60


def degrade(image: np.ndarray, rng: np.random.Generator, sigma: float = 1.5, noise: float = 12.0) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (per channel), then Gaussian noise of ``noise`` per channel, as uint8."""
    blurred = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), sigma=(sigma, sigma, 0))
    noisy = blurred + rng.normal(0.0, noise, blurred.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def eval_scenes() -> list[Scene]:
    """300 scenes, 60 of each category (single, size, position, pair, held-out), with a fixed seed."""
    rng = np.random.default_rng(1234)
    return [sample_scene(rng, mode="eval", category=c) for c in CATEGORIES for _ in range(SCENES_PER_CATEGORY)]


@pytest.fixture(scope="session")
def rendered(eval_scenes: list[Scene]) -> Callable[[int], list[np.ndarray]]:
    """``rendered(size)``: the renders of :func:`eval_scenes` at ``size`` pixels (cached)."""
    cache: dict[int, list[np.ndarray]] = {}

    def get(size: int) -> list[np.ndarray]:
        if size not in cache:
            cache[size] = [np.asarray(render_scene(scene, size=size)) for scene in eval_scenes]
        return cache[size]

    return get
