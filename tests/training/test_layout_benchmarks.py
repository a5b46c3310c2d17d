"""The layout benchmarks: pair_failure_modes' rows, and clip_caption_neighbours' mirrored and reflected captions."""

import os
import sys
from dataclasses import asdict

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from benchmarks.clip_caption_neighbours import counterparts  # noqa: E402
from benchmarks.pair_failure_modes import MODES, failure_mode  # noqa: E402
from unclip_pipelines.shapes import judge_image, render_scene, scene_from_caption  # noqa: E402

CAPTION = "a red circle to the left of a blue square"


def _objects(red, blue, extra=()):
    """Objects as ``evaluation.json`` stores them: a red circle and a blue square at centres ``red`` and ``blue``."""
    rows = [{"colour": "red", "shape": "circle", "cx": red[0], "cy": red[1]},
            {"colour": "blue", "shape": "square", "cx": blue[0], "cy": blue[1]}]
    return rows + list(extra)


@pytest.mark.parametrize(
    "red, blue, mode",
    [
        ((0.25, 0.5), (0.75, 0.5), "relation holds"),
        ((0.75, 0.5), (0.25, 0.5), "mirrored"),
        ((0.5, 0.75), (0.5, 0.25), "perpendicular"),  # drawn below: the anti-diagonal reflection
        ((0.5, 0.25), (0.5, 0.75), "perpendicular"),  # drawn above
        ((0.2, 0.2), (0.8, 0.8), "right side, off axis"),  # on the left, but 0.6 W lower
        ((0.48, 0.48), (0.52, 0.52), "other"),
    ],
)
def test_failure_mode_sorts_two_named_objects_by_where_they_are(red, blue, mode):
    assert failure_mode(CAPTION, _objects(red, blue)) == mode


def test_failure_mode_counts_and_names_before_places():
    assert failure_mode(CAPTION, _objects((0.2, 0.5), (0.8, 0.5))[:1]) == "wrong count"
    three = _objects((0.2, 0.5), (0.8, 0.5), [{"colour": "green", "shape": "circle", "cx": 0.5, "cy": 0.1}])
    assert failure_mode(CAPTION, three) == "wrong count"
    wrong_colour = _objects((0.2, 0.5), (0.8, 0.5))
    wrong_colour[1]["colour"] = "green"
    assert failure_mode(CAPTION, wrong_colour) == "objects not as named"
    with pytest.raises(ValueError, match="not a pair caption"):
        failure_mode("a red circle", _objects((0.2, 0.5), (0.8, 0.5)))
    assert set(MODES) >= {"relation holds", "mirrored", "perpendicular"}


def test_failure_mode_of_judged_renders_follows_what_was_drawn():
    """The judge's detections of renders of the caption, its mirror and its reflections (as evaluate stores them)."""
    rng = np.random.default_rng(0)
    drawn = {"relation holds": CAPTION, **{f"from {k}": v for k, v in counterparts(CAPTION).items()}}
    modes = {}
    for name, caption in drawn.items():
        result = judge_image(render_scene(scene_from_caption(rng, caption), 128), CAPTION)
        modes[name] = failure_mode(CAPTION, [asdict(o) for o in result.objects])
    assert modes["relation holds"] == "relation holds"
    assert modes["from relation"] == "mirrored"
    assert modes["from relation_diagonal"] == modes["from relation_antidiagonal"] == "perpendicular"


def test_counterparts_mirror_positions_and_reflect_relations():
    found = counterparts(CAPTION)
    assert found == {
        "relation": "a red circle to the right of a blue square",
        "relation_diagonal": "a red circle above a blue square",
        "relation_antidiagonal": "a red circle below a blue square",
    }
    assert counterparts("a red circle on the left") == {"position": "a red circle on the right"}
    assert counterparts("a red circle") == {}
