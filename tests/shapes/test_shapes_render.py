"""The renderer draws the spec's geometry, colours and background, anti-aliased, at any resolution."""

from __future__ import annotations

import numpy as np
import pytest

from unclip_pipelines.shapes import BACKGROUND, PALETTE, ShapeObject, render_objects, render_scene, template_mask
from unclip_pipelines.shapes.world import Scene

# Areas of each shape as a fraction of its box (spec geometry).
AREA_FRACTION = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5}


def coverage(image: np.ndarray, colour: str) -> np.ndarray:
    """Per-pixel ink coverage in [0, 1], from the channel with the most contrast against the background."""
    rgb = np.array(PALETTE[colour], dtype=np.float64)
    channel = int(np.argmax(np.abs(rgb - BACKGROUND)))
    values = np.asarray(image, dtype=np.float64)[..., channel]
    return (values - BACKGROUND[channel]) / (rgb[channel] - BACKGROUND[channel])


def test_canvas_size_mode_and_background():
    image = render_scene(Scene(objects=(), caption="", category=""), size=96)
    assert image.size == (96, 96) and image.mode == "RGB"
    assert (np.asarray(image) == BACKGROUND).all()


@pytest.mark.parametrize("colour", list(PALETTE))
def test_object_interior_has_the_exact_palette_colour(colour):
    image = np.asarray(render_objects([ShapeObject(colour, "square", 0.4, 0.5, 0.5)], size=128))
    assert (image[40:88, 40:88] == PALETTE[colour]).all()
    assert (image[:10] == BACKGROUND).all() and (image[-10:] == BACKGROUND).all()


@pytest.mark.parametrize("shape", list(AREA_FRACTION))
@pytest.mark.parametrize("size", [64, 128, 256])
def test_area_matches_the_geometry_at_any_resolution(shape, size):
    obj = ShapeObject("blue", shape, 0.41, 0.47, 0.53)
    image = np.asarray(render_objects([obj], size=size))
    ink = coverage(image, "blue").sum() / size**2
    assert ink == pytest.approx(AREA_FRACTION[shape] * 0.41**2, rel=0.02)


def test_anti_aliasing_produces_intermediate_values_and_none_without_supersampling():
    obj = ShapeObject("red", "circle", 0.5, 0.5, 0.5)
    smooth = coverage(np.asarray(render_objects([obj], size=64)), "red")
    hard = coverage(np.asarray(render_objects([obj], size=64, supersample=1)), "red")
    assert ((smooth > 0.1) & (smooth < 0.9)).sum() > 50
    assert ((hard > 0.01) & (hard < 0.99)).sum() == 0


@pytest.mark.parametrize("shape", list(AREA_FRACTION))
def test_render_matches_the_exact_template(shape):
    """Pixels at least half covered form the template mask (pixel centres), up to a thin boundary."""
    obj = ShapeObject("green", shape, 0.43, 0.52, 0.46)
    size = 128
    rendered = coverage(np.asarray(render_objects([obj], size=size)), "green") >= 0.5
    centres = np.arange(size) + 0.5
    box = (obj.box[0] * size, obj.box[1] * size, obj.side * size)
    exact = template_mask(shape, centres[None, :], centres[:, None], box)
    iou = (rendered & exact).sum() / (rendered | exact).sum()
    assert iou > 0.97


def test_triangle_points_up_and_diamond_touches_edge_midpoints():
    size = 128
    tri = coverage(np.asarray(render_objects([ShapeObject("red", "triangle", 0.5, 0.5, 0.5)], size=size)), "red")
    rows = tri.sum(axis=1)
    top, bottom = 32, 96  # box rows [32, 96)
    assert rows[top + 2] < rows[bottom - 3] / 10  # narrow apex at the top, wide base at the bottom
    assert rows[bottom - 1] == pytest.approx(64 * (1 - 0.5 / 64), abs=0.5)  # the base spans the whole box
    assert rows[bottom] == 0 and rows[top - 1] == 0
    ys = np.arange(size) + 0.5
    assert (rows * ys).sum() / rows.sum() == pytest.approx(32 + 2 / 3 * 64, abs=0.5)  # centroid at 2/3 height

    dia = coverage(np.asarray(render_objects([ShapeObject("red", "diamond", 0.5, 0.5, 0.5)], size=size)), "red")
    assert dia[63:65, 33:35].mean() > 0.5 and dia[33:35, 63:65].mean() > 0.5  # left and top vertices
    assert dia[32:40, 32:40].max() == 0  # box corner empty
    circle = coverage(np.asarray(render_objects([ShapeObject("red", "circle", 0.5, 0.5, 0.5)], size=size)), "red")
    assert circle[32:38, 32:38].max() == 0 and circle[62:66, 32:34].mean() > 0.5


def test_pair_renders_both_objects_in_place():
    a = ShapeObject("yellow", "square", 0.25, 0.25, 0.5)
    b = ShapeObject("purple", "circle", 0.25, 0.75, 0.5)
    image = np.asarray(render_scene(Scene((a, b), "a yellow square to the left of a purple circle", "pair")))
    assert (image[64, 32] == PALETTE["yellow"]).all()
    assert (image[64, 96] == PALETTE["purple"]).all()
    assert (image[64, 64] == BACKGROUND).all()
