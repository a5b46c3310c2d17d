"""Rendering of Shapes World scenes, and the exact shape templates the judge compares against.

Geometry of each shape inside its square box of side ``s``:

- ``circle``: the disc inscribed in the box;
- ``square``: the whole box;
- ``triangle``: apex at the middle of the top edge, base = the whole bottom edge;
- ``diamond``: the four vertices at the midpoints of the box's edges.

Scenes are drawn with anti-aliasing: with :mod:`PIL.ImageDraw` at ``supersample`` times the resolution, then reduced
with a box (area-average) filter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .world import BACKGROUND, PALETTE, SHAPES, Scene, ShapeObject


def _draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject, scale: float) -> None:
    """Draw ``obj`` on a canvas of side ``scale`` pixels.

    A continuous coordinate ``u`` (pixel ``i`` covers ``[i, i + 1)``) is PIL's ``u - 0.5`` (PIL centres pixel ``i`` on
    ``i``), and PIL fills every pixel its outline touches, so each box is shrunk by half a pixel on every side to
    make the filled area match the continuous shape (to within PIL's integer rounding of vertices).
    """
    colour = PALETTE[obj.colour]
    x0, y0, x1, y1 = (v * scale for v in obj.box)
    if obj.shape == "square":
        # Exact: the pixels whose centres lie inside the box.
        left, top = int(np.ceil(x0 - 0.5)), int(np.ceil(y0 - 0.5))
        right, bottom = int(np.ceil(x1 - 0.5)) - 1, int(np.ceil(y1 - 0.5)) - 1
        if right >= left and bottom >= top:
            draw.rectangle((left, top, right, bottom), fill=colour)
        return
    x0, y0, x1, y1 = x0, y0, x1 - 1.0, y1 - 1.0
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif obj.shape == "triangle":
        draw.polygon([(xm, y0), (x1, y1), (x0, y1)], fill=colour)
    elif obj.shape == "diamond":
        draw.polygon([(xm, y0), (x1, ym), (xm, y1), (x0, ym)], fill=colour)
    else:  # pragma: no cover - ShapeObject validates its shape
        raise ValueError(f"Unknown shape {obj.shape!r}; expected one of {SHAPES}.")


def render_objects(
    objects: Sequence[ShapeObject],
    size: int = 128,
    supersample: int = 4,
    background: tuple[int, int, int] = BACKGROUND,
) -> Image.Image:
    """
    Render objects on a square canvas.

    Args:
        objects: the objects; their coordinates are fractions of the canvas side.
        size: the side of the output image, in pixels.
        supersample: the anti-aliasing factor (1 disables anti-aliasing).
        background: the background colour.

    Returns:
        An RGB :class:`PIL.Image.Image` of ``size × size`` pixels.
    """
    if size < 1 or supersample < 1:
        raise ValueError(f"size and supersample must be positive, got {size} and {supersample}.")
    canvas = Image.new("RGB", (size * supersample, size * supersample), background)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        _draw_object(draw, obj, float(size * supersample))
    return canvas.reduce(supersample) if supersample > 1 else canvas


def render_scene(scene: Scene | Sequence[ShapeObject], size: int = 128, supersample: int = 4) -> Image.Image:
    """Render a :class:`~.world.Scene` (or a sequence of objects) as an anti-aliased ``size × size`` RGB image."""
    objects = scene.objects if isinstance(scene, Scene) else scene
    return render_objects(objects, size=size, supersample=supersample)


def template_mask(shape: str, xs: np.ndarray, ys: np.ndarray, box: tuple[float, float, float]) -> np.ndarray:
    """
    The exact (aliased) mask of a shape template: which points lie inside the shape.

    Args:
        shape: one of :data:`~.world.SHAPES`.
        xs, ys: broadcastable arrays of point coordinates (e.g. pixel centres ``i + 0.5``).
        box: ``(x0, y0, side)``, the top-left corner and side of the shape's square box, in the same units.

    Returns:
        A boolean array of the broadcast shape of ``xs`` and ``ys``.
    """
    x0, y0, side = box
    u = (np.asarray(xs, dtype=np.float64) - x0) / side - 0.5
    v = (np.asarray(ys, dtype=np.float64) - y0) / side - 0.5
    if shape == "square":
        return (np.abs(u) <= 0.5) & (np.abs(v) <= 0.5)
    if shape == "circle":
        return u * u + v * v <= 0.25
    if shape == "triangle":  # apex (0, -0.5), base y = 0.5: |u| <= (v + 0.5) / 2
        return (np.abs(v) <= 0.5) & (2 * np.abs(u) <= v + 0.5)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 0.5
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")
