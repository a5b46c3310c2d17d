"""Constants and data types of the Shapes World, the benchmark world of the embedded model.

Every length and coordinate is a fraction of the canvas side ``W`` (the canvas is square), so a scene renders at any
resolution. The ``y`` axis grows downwards. The predicates :func:`position_holds` and :func:`relation_holds` are the
single source of truth for the placement rules: the sampler uses them with ``slack=0`` (the rules a render obeys) and
the judge with ``slack=JUDGE_SLACK`` (the same rules loosened by ``0.05 W``).
"""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------------

#: Colour name → RGB. The order is the canonical order of the vocabulary.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 190),
    "cyan": (30, 190, 200),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

#: Shape names; each shape lives in an axis-aligned square box (see :mod:`.render`).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

#: The flat background colour of every render.
BACKGROUND: tuple[int, int, int] = (235, 235, 235)

SIZE_WORDS: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("on the left", "on the right", "at the top", "at the bottom", "in the center")
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")

#: Each relation and its mirror image (``A r B`` holds exactly when ``B mirror(r) A`` holds).
MIRRORED_RELATION: dict[str, str] = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}

#: Colour–shape pairs that never occur in training data (single or pair); they test composition.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("purple", "triangle"), ("yellow", "square"), ("cyan", "circle"), ("green", "diamond")}
)

#: Evaluation categories, in report order.
CATEGORIES: tuple[str, ...] = ("single", "size", "position", "pair", "held-out")

# --------------------------------------------------------------------------------------------------------------------
# Geometry (fractions of W)
# --------------------------------------------------------------------------------------------------------------------

#: Range of the box side ``s`` for each size word.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.18, 0.27), "large": (0.38, 0.48)}
#: Range of ``s`` for a single object whose caption names no size.
SINGLE_SIZE_RANGE: tuple[float, float] = (0.18, 0.48)
#: Range of ``s`` for each object of a pair (pair captions never name a size).
PAIR_SIZE_RANGE: tuple[float, float] = (0.20, 0.32)
#: The judge calls an object ``small`` when its box side is below this, else ``large``.
SIZE_SPLIT: float = 0.33

#: Every box lies inside the canvas with at least this margin.
MARGIN: float = 0.03
#: The two boxes of a pair are disjoint, separated by at least this gap along ``x`` or ``y``.
PAIR_GAP: float = 0.04

LEFT_MAX: float = 0.35  # "on the left": cx <= 0.35
RIGHT_MIN: float = 0.65  # "on the right": cx >= 0.65
TOP_MAX: float = 0.35  # "at the top": cy <= 0.35
BOTTOM_MIN: float = 0.65  # "at the bottom": cy >= 0.65
CENTER_RANGE: tuple[float, float] = (0.42, 0.58)  # "in the center": cx and cy in this range

#: "A to the left of B": cx_A + RELATION_OFFSET <= cx_B and |cy_A - cy_B| <= RELATION_TOLERANCE (likewise vertically).
RELATION_OFFSET: float = 0.15
RELATION_TOLERANCE: float = 0.25

#: How much the judge loosens every position and relation threshold.
JUDGE_SLACK: float = 0.05
#: Smallest side (pixels) of an image the judge accepts.
MIN_JUDGE_RESOLUTION: int = 64


def is_held_out(colour: str, shape: str) -> bool:
    """Whether ``colour shape`` is one of the held-out combinations."""
    return (colour, shape) in HELD_OUT_PAIRS


def size_word(side: float) -> str:
    """The size word the judge gives a box of side ``side`` (fraction of W)."""
    return "small" if side < SIZE_SPLIT else "large"


def position_holds(position: str, cx: float, cy: float, slack: float = 0.0) -> bool:
    """Whether a centre ``(cx, cy)`` (fractions of W) satisfies a position phrase, thresholds loosened by ``slack``."""
    if position == "on the left":
        return cx <= LEFT_MAX + slack
    if position == "on the right":
        return cx >= RIGHT_MIN - slack
    if position == "at the top":
        return cy <= TOP_MAX + slack
    if position == "at the bottom":
        return cy >= BOTTOM_MIN - slack
    if position == "in the center":
        low, high = CENTER_RANGE
        return low - slack <= cx <= high + slack and low - slack <= cy <= high + slack
    raise ValueError(f"Unknown position {position!r}; expected one of {POSITIONS}.")


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float], slack: float = 0.0) -> bool:
    """Whether ``A relation B`` holds for centres ``a = (cx_A, cy_A)`` and ``b``, thresholds loosened by ``slack``."""
    offset, tolerance = RELATION_OFFSET - slack, RELATION_TOLERANCE + slack
    (ax, ay), (bx, by) = a, b
    if relation == "to the left of":
        return ax + offset <= bx and abs(ay - by) <= tolerance
    if relation == "to the right of":
        return bx + offset <= ax and abs(ay - by) <= tolerance
    if relation == "above":
        return ay + offset <= by and abs(ax - bx) <= tolerance
    if relation == "below":
        return by + offset <= ay and abs(ax - bx) <= tolerance
    raise ValueError(f"Unknown relation {relation!r}; expected one of {RELATIONS}.")


# --------------------------------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeObject:
    """
    One object of a scene.

    Args:
        colour: a key of :data:`PALETTE`.
        shape: one of :data:`SHAPES`.
        side: the side ``s`` of the object's square box, as a fraction of W.
        cx, cy: the box centre, as fractions of W (``y`` grows downwards).
    """

    colour: str
    shape: str
    side: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if self.colour not in PALETTE:
            raise ValueError(f"Unknown colour {self.colour!r}; expected one of {COLOURS}.")
        if self.shape not in SHAPES:
            raise ValueError(f"Unknown shape {self.shape!r}; expected one of {SHAPES}.")
        if not self.side > 0:
            raise ValueError(f"The box side must be positive, got {self.side}.")

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The box ``(x0, y0, x1, y1)`` as fractions of W."""
        half = self.side / 2
        return (self.cx - half, self.cy - half, self.cx + half, self.cy + half)

    @property
    def center(self) -> tuple[float, float]:
        return (self.cx, self.cy)


@dataclass(frozen=True)
class Scene:
    """
    A caption and the objects that depict it.

    Args:
        objects: the objects, in the order their phrases appear in the caption.
        caption: the caption (see :func:`~unclip_pipelines.shapes.captions.parse_caption` for the grammar).
        category: the caption's evaluation category, one of :data:`CATEGORIES`.
    """

    objects: tuple[ShapeObject, ...]
    caption: str
    category: str
