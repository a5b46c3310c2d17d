"""benchmarks/decoder_embedding_sources.py's centre correlation: renders against themselves, mirrored, and too few."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from benchmarks.decoder_embedding_sources import centre_correlation  # noqa: E402
from unclip_pipelines.shapes import render_scene, scene_from_caption  # noqa: E402


def _renders(n):
    rng = np.random.default_rng(0)
    return [render_scene(scene_from_caption(rng, "a red circle")) for _ in range(n)]


def test_centre_correlation_follows_where_the_object_is():
    renders = _renders(8)
    same = centre_correlation(renders, renders)
    assert same["images"] == 8 and same["x"] > 0.999 and same["y"] > 0.999
    mirrored = [np.ascontiguousarray(np.asarray(r)[:, ::-1]) for r in renders]
    flipped = centre_correlation(renders, mirrored)
    assert flipped["x"] < -0.99 and flipped["y"] > 0.999


def test_centre_correlation_needs_three_single_object_pairs():
    renders = _renders(2)
    assert centre_correlation(renders, renders) == {"x": None, "y": None, "images": 2}
    two_objects = [render_scene(scene_from_caption(np.random.default_rng(1), "a red circle to the left of a blue square"))] * 4
    assert centre_correlation(two_objects, two_objects)["images"] == 0
