"""The exact, rule-based judge of the Shapes World (in the spirit of GenEval's per-object checks).

Detection (:func:`detect_objects`):

1. background = the per-channel median colour of the one-pixel border;
2. foreground = pixels whose RGB distance to the background exceeds :data:`FOREGROUND_DISTANCE`;
3. objects = 8-connected foreground components covering at least :data:`MIN_OBJECT_FRACTION` of the canvas;
4. colour = the median RGB of the component after one binary erosion (3×3; the un-eroded pixels when erosion
   empties it), named by the nearest palette colour, ``"unknown"`` if farther than :data:`MAX_COLOUR_DISTANCE`;
5. shape = the template with the highest IoU against the component, each drawn in the object's square box (side =
   the larger side of the bounding box, centred on it), ``"unknown"`` below :data:`MIN_SHAPE_IOU`; the IoU is
   computed on a 4× sub-pixel grid (templates sampled at sub-pixel centres, mask pixels split into 4×4 blocks), so
   that a box edge falling on a pixel's centre is drawn exactly instead of rounding a whole row in or out;
6. size = ``small`` if the box side is below 0.33 W, else ``large``; position and relations use the box centres
   with every threshold loosened by 0.05 W.

Judging (:func:`judge_detections`): an image is correct when it holds as many objects as the caption names and there
is a one-to-one matching of objects to phrases under which every named attribute holds.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .captions import ObjectPhrase, ParsedCaption, parse_caption
from .render import template_mask
from .world import JUDGE_SLACK, MIN_JUDGE_RESOLUTION, PALETTE, SHAPES, position_holds, relation_holds, size_word

FOREGROUND_DISTANCE = 60.0
MIN_OBJECT_FRACTION = 0.01
MAX_COLOUR_DISTANCE = 80.0
MIN_SHAPE_IOU = 0.6
UNKNOWN = "unknown"

_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = np.array([PALETTE[name] for name in _PALETTE_NAMES], dtype=np.float64)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
#: Sub-pixel factor at which templates are drawn against a component's mask when computing IoU.
_TEMPLATE_SUPERSAMPLE = 4


@dataclass(frozen=True)
class DetectedObject:
    """
    An object found by the judge. Lengths and coordinates are fractions of the image side W unless noted.

    Args:
        colour: the palette name, or ``"unknown"``.
        shape: the best-matching template, or ``"unknown"``.
        size: ``"small"`` or ``"large"``.
        cx, cy: the centre of the bounding box.
        side: the larger side of the bounding box.
        area: the number of pixels of the component.
        rgb: the median RGB of its (eroded) pixels.
        shape_iou: the IoU of the best template.
        bbox: ``(x0, y0, x1, y1)`` in pixels, end-exclusive.
    """

    colour: str
    shape: str
    size: str
    cx: float
    cy: float
    side: float
    area: int
    rgb: tuple[float, float, float]
    shape_iou: float
    bbox: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        return (self.cx, self.cy)


@dataclass(frozen=True)
class JudgeResult:
    """
    The verdict on one image. Per-attribute checks are ``None`` when the caption names no such attribute and are
    defined so that they stay meaningful when the object count is wrong:

    - ``count``: the number of detected objects equals the number of object phrases;
    - ``colour`` / ``shape``: the named colours (shapes) form a sub-multiset of the detected ones;
    - ``binding``: there is a one-to-one assignment of phrases to detected objects under which every object has
      both its phrase's colour and shape (for a single object: some object has both);
    - ``size`` / ``position`` (single objects): one of the *candidate* objects of the phrase has the named size
      (position), the candidates being the detected objects that match the phrase's colour and shape best (all
      objects when none matches either); ``False`` when nothing is detected;
    - ``relation`` (pairs): the relation holds for one of the one-to-one assignments of the two phrases to two
      detected objects with the highest number of colour and shape matches; ``False`` with fewer than two objects;
    - ``correct``: ``count`` holds and one matching of objects to phrases satisfies every named attribute at once.
    """

    caption: str
    correct: bool
    objects: tuple[DetectedObject, ...]
    count: bool
    colour: bool
    shape: bool
    binding: bool
    size: bool | None
    position: bool | None
    relation: bool | None

    def attributes(self) -> dict[str, bool | None]:
        """The per-attribute checks, by name."""
        return {name: getattr(self, name) for name in ATTRIBUTES}


#: The per-attribute checks of a :class:`JudgeResult`, in report order.
ATTRIBUTES: tuple[str, ...] = ("count", "colour", "shape", "binding", "size", "position", "relation")


def _to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An ``H × W × 3`` float array in [0, 255]; checks that the image is square and large enough."""
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"), dtype=np.float64)
    else:
        array = np.asarray(image, dtype=np.float64)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"Expected an H×W×3 RGB array (values in [0, 255]), got shape {array.shape}.")
    height, width = array.shape[:2]
    if min(height, width) < MIN_JUDGE_RESOLUTION:
        raise ValueError(
            f"The judge needs images of at least {MIN_JUDGE_RESOLUTION}×{MIN_JUDGE_RESOLUTION} pixels, got "
            f"{width}×{height}: below that, small shapes are too coarse to name."
        )
    if height != width:
        raise ValueError(f"Shapes World images are square, got {width}×{height}.")
    return array


def _name_colour(rgb: np.ndarray) -> str:
    distances = np.linalg.norm(_PALETTE_RGB - rgb, axis=1)
    best = int(np.argmin(distances))
    return _PALETTE_NAMES[best] if distances[best] <= MAX_COLOUR_DISTANCE else UNKNOWN


def _name_shape(mask: np.ndarray, top: int, left: int) -> tuple[str, float]:
    """Best template for a component ``mask`` (its bounding-box crop, whose top-left pixel is ``(top, left)``)."""
    height, width = mask.shape
    side = max(height, width)
    cx, cy = left + width / 2, top + height / 2
    x0, y0 = cx - side / 2, cy - side / 2
    # A pixel grid covering both the bounding box and the square box.
    gx0, gy0 = int(np.floor(min(x0, left))), int(np.floor(min(y0, top)))
    gx1, gy1 = int(np.ceil(max(x0 + side, left + width))), int(np.ceil(max(y0 + side, top + height)))
    grid = np.zeros((gy1 - gy0, gx1 - gx0), dtype=bool)
    grid[top - gy0 : top - gy0 + height, left - gx0 : left - gx0 + width] = mask
    # Compare at sub-pixel resolution: each pixel of the mask becomes a k×k block and the templates are sampled at
    # the centres of the sub-pixels, so a box edge on a pixel boundary or a pixel's middle is drawn exactly.
    k = _TEMPLATE_SUPERSAMPLE
    grid = np.kron(grid, np.ones((k, k), dtype=bool))
    xs = gx0 + (np.arange(grid.shape[1], dtype=np.float64)[None, :] + 0.5) / k
    ys = gy0 + (np.arange(grid.shape[0], dtype=np.float64)[:, None] + 0.5) / k
    best_shape, best_iou = UNKNOWN, 0.0
    for shape in SHAPES:
        template = template_mask(shape, xs, ys, (x0, y0, float(side)))
        union = np.count_nonzero(template | grid)
        iou = np.count_nonzero(template & grid) / union if union else 0.0
        if iou > best_iou:
            best_shape, best_iou = shape, iou
    return (best_shape if best_iou >= MIN_SHAPE_IOU else UNKNOWN), best_iou


def detect_objects(image: Image.Image | np.ndarray) -> list[DetectedObject]:
    """
    Find and describe the objects of an image (steps 1–6 of the module docstring).

    Args:
        image: a square RGB image (PIL, or an ``H × W × 3`` array with values in [0, 255]) of at least 64 pixels.

    Returns:
        The detected objects, in raster order of their first pixel.

    Raises:
        ValueError: if the image is smaller than 64 pixels a side, not square, or not RGB.
    """
    pixels = _to_array(image)
    side_px = pixels.shape[0]
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    background = np.median(border, axis=0)
    foreground = np.linalg.norm(pixels - background, axis=-1) > FOREGROUND_DISTANCE
    labels, _ = ndimage.label(foreground, structure=_EIGHT_CONNECTED)
    areas = np.bincount(labels.ravel())
    min_area = MIN_OBJECT_FRACTION * side_px * side_px

    objects = []
    for index, crop in enumerate(ndimage.find_objects(labels), start=1):
        if crop is None or areas[index] < min_area:
            continue
        mask = labels[crop] == index
        eroded = ndimage.binary_erosion(mask, structure=_EIGHT_CONNECTED)
        rgb = np.median(pixels[crop][eroded if eroded.any() else mask], axis=0)
        top, left = crop[0].start, crop[1].start
        height, width = mask.shape
        shape, iou = _name_shape(mask, top, left)
        side = max(height, width) / side_px
        objects.append(
            DetectedObject(
                colour=_name_colour(rgb),
                shape=shape,
                size=size_word(side),
                cx=(left + width / 2) / side_px,
                cy=(top + height / 2) / side_px,
                side=side,
                area=int(areas[index]),
                rgb=(float(rgb[0]), float(rgb[1]), float(rgb[2])),
                shape_iou=float(iou),
                bbox=(left, top, left + width, top + height),
            )
        )
    return objects


def _phrase_score(phrase: ObjectPhrase, obj: DetectedObject) -> int:
    """How many of a phrase's colour and shape an object has (0–2)."""
    return int(obj.colour == phrase.colour) + int(obj.shape == phrase.shape)


def _object_satisfies(phrase: ObjectPhrase, obj: DetectedObject) -> bool:
    """Whether an object has every attribute its phrase names (colour, shape, and size and position if named)."""
    return (
        _phrase_score(phrase, obj) == 2
        and (phrase.size is None or obj.size == phrase.size)
        and (phrase.position is None or position_holds(phrase.position, obj.cx, obj.cy, JUDGE_SLACK))
    )


def _relation_satisfied(parsed: ParsedCaption, assigned: Sequence[DetectedObject]) -> bool:
    if parsed.relation is None:
        return True
    return relation_holds(parsed.relation, assigned[0].center, assigned[1].center, JUDGE_SLACK)


def _is_sub_multiset(named: list[str], detected: list[str]) -> bool:
    return not (Counter(named) - Counter(detected))


def judge_detections(objects: Sequence[DetectedObject], caption: str | ParsedCaption) -> JudgeResult:
    """Judge already-detected objects against a caption (see :class:`JudgeResult` for every check)."""
    parsed = parse_caption(caption) if isinstance(caption, str) else caption
    phrases, objects = parsed.objects, tuple(objects)
    assignments = list(itertools.permutations(objects, len(phrases)))

    count = len(objects) == len(phrases)
    colour = _is_sub_multiset([p.colour for p in phrases], [o.colour for o in objects])
    shape = _is_sub_multiset([p.shape for p in phrases], [o.shape for o in objects])
    binding = any(all(_phrase_score(p, o) == 2 for p, o in zip(phrases, a, strict=True)) for a in assignments)
    correct = count and any(
        all(_object_satisfies(p, o) for p, o in zip(phrases, a, strict=True)) and _relation_satisfied(parsed, a)
        for a in assignments
    )

    size = position = relation = None
    if not parsed.is_pair:
        phrase = phrases[0]
        best = max((_phrase_score(phrase, o) for o in objects), default=0)
        candidates = [o for o in objects if _phrase_score(phrase, o) == best]
        if phrase.size is not None:
            size = any(o.size == phrase.size for o in candidates)
        if phrase.position is not None:
            position = any(position_holds(phrase.position, o.cx, o.cy, JUDGE_SLACK) for o in candidates)
    else:
        scores = [sum(_phrase_score(p, o) for p, o in zip(phrases, a, strict=True)) for a in assignments]
        best = max(scores, default=0)
        relation = any(_relation_satisfied(parsed, a) for a, s in zip(assignments, scores, strict=True) if s == best)

    return JudgeResult(
        caption=parsed.text,
        correct=correct,
        objects=objects,
        count=count,
        colour=colour,
        shape=shape,
        binding=binding,
        size=size,
        position=position,
        relation=relation,
    )


def judge_image(image: Image.Image | np.ndarray, caption: str | ParsedCaption) -> JudgeResult:
    """
    Judge whether an image depicts a caption.

    Args:
        image: a square RGB image of at least 64 pixels a side (PIL, or an ``H × W × 3`` array in [0, 255]).
        caption: a caption of the Shapes World grammar, or its :class:`~.captions.ParsedCaption`.

    Raises:
        ValueError: if the image is too small, not square or not RGB, or the caption does not parse.
    """
    parsed = parse_caption(caption) if isinstance(caption, str) else caption  # fail fast on bad captions
    return judge_detections(detect_objects(image), parsed)
