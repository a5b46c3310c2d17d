"""The caption grammar of the Shapes World: parsing, categories, and a scene sampler that obeys every placement rule.

Grammar (words separated by single spaces)::

    single := "a " [SIZE " "] COLOUR " " SHAPE [" " POSITION]
    pair   := "a " COLOUR " " SHAPE " " RELATION " a " COLOUR " " SHAPE

    SIZE     := small | large
    COLOUR   := red | green | blue | yellow | purple | cyan
    SHAPE    := circle | square | triangle | diamond
    POSITION := on the left | on the right | at the top | at the bottom | in the center
    RELATION := to the left of | to the right of | above | below
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from .world import (
    BOTTOM_MIN,
    CATEGORIES,
    CENTER_RANGE,
    COLOURS,
    HELD_OUT_PAIRS,
    LEFT_MAX,
    MARGIN,
    PAIR_GAP,
    PAIR_SIZE_RANGE,
    POSITIONS,
    RELATIONS,
    RIGHT_MIN,
    SHAPES,
    SINGLE_SIZE_RANGE,
    SIZE_RANGES,
    SIZE_WORDS,
    TOP_MAX,
    Scene,
    ShapeObject,
    is_held_out,
    relation_holds,
)

#: Fraction of sampled scenes that are pairs (the rest are single objects).
PAIR_PROBABILITY = 0.55
#: Probability that a single object's caption names its size, and (independently) its position.
SIZE_PROBABILITY = 0.5
POSITION_PROBABILITY = 0.5
MODES = ("train", "eval", "heldout")

_COMBOS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
_MAX_TRIES = 10_000


# --------------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectPhrase:
    """One object phrase of a caption; ``size`` and ``position`` are ``None`` when not named."""

    colour: str
    shape: str
    size: str | None = None
    position: str | None = None

    @property
    def text(self) -> str:
        size = f"{self.size} " if self.size else ""
        position = f" {self.position}" if self.position else ""
        return f"a {size}{self.colour} {self.shape}{position}"


@dataclass(frozen=True)
class ParsedCaption:
    """A parsed caption: one object phrase (single) or two and a relation (pair: ``objects[0] relation objects[1]``)."""

    objects: tuple[ObjectPhrase, ...]
    relation: str | None = None

    @property
    def is_pair(self) -> bool:
        return len(self.objects) == 2

    @property
    def has_held_out(self) -> bool:
        """Whether any object phrase names a held-out colour–shape combination."""
        return any(is_held_out(o.colour, o.shape) for o in self.objects)

    @property
    def text(self) -> str:
        """The canonical caption text; ``parse_caption(p.text) == p``."""
        if self.relation is None:
            return self.objects[0].text
        return f"{self.objects[0].text} {self.relation} {self.objects[1].text}"


def _alternatives(words: tuple[str, ...]) -> str:
    return "|".join(re.escape(w) for w in words)


_COLOUR, _SHAPE = f"({_alternatives(COLOURS)})", f"({_alternatives(SHAPES)})"
_SINGLE_RE = re.compile(f"a (?:({_alternatives(SIZE_WORDS)}) )?{_COLOUR} {_SHAPE}(?: ({_alternatives(POSITIONS)}))?")
_PAIR_RE = re.compile(f"a {_COLOUR} {_SHAPE} ({_alternatives(RELATIONS)}) a {_COLOUR} {_SHAPE}")
_VOCABULARY = frozenset(
    {"a", *SIZE_WORDS, *COLOURS, *SHAPES, *" ".join(POSITIONS).split(), *" ".join(RELATIONS).split()}
)
_GRAMMAR_HELP = (
    "expected 'a [SIZE ]COLOUR SHAPE[ POSITION]' or 'a COLOUR SHAPE RELATION a COLOUR SHAPE' with "
    f"SIZE in {SIZE_WORDS}, COLOUR in {COLOURS}, SHAPE in {SHAPES}, POSITION in {POSITIONS}, "
    f"RELATION in {RELATIONS}"
)


def parse_caption(text: str) -> ParsedCaption:
    """
    Parse a caption of the Shapes World grammar (see the module docstring).

    Matching is case-insensitive and ignores leading, trailing and repeated whitespace; anything else (punctuation,
    other words, a size or position inside a pair, a missing article, ...) is rejected.

    Raises:
        ValueError: if ``text`` does not follow the grammar; the message names the offending word when it is not in
            the vocabulary.
    """
    if not isinstance(text, str):
        raise TypeError(f"A caption must be a string, got {type(text).__name__}.")
    normalized = " ".join(text.lower().split())
    match = _SINGLE_RE.fullmatch(normalized)
    if match is not None:
        size, colour, shape, position = match.groups()
        return ParsedCaption((ObjectPhrase(colour, shape, size, position),))
    match = _PAIR_RE.fullmatch(normalized)
    if match is not None:
        colour_a, shape_a, relation, colour_b, shape_b = match.groups()
        return ParsedCaption((ObjectPhrase(colour_a, shape_a), ObjectPhrase(colour_b, shape_b)), relation)
    unknown = [w for w in normalized.split() if w not in _VOCABULARY]
    reason = f"unknown word {unknown[0]!r}" if unknown else "the words are not in a valid order"
    raise ValueError(f"Cannot parse caption {text!r}: {reason}; {_GRAMMAR_HELP}.")


def caption_category(caption: str | ParsedCaption) -> str:
    """
    The evaluation category of a caption, one of :data:`~.world.CATEGORIES`:

    - ``"held-out"`` if any object phrase names a held-out colour–shape combination (single or pair);
    - else ``"pair"`` for two objects;
    - else ``"position"`` if a position is named (whether or not a size is also named: position is the harder skill);
    - else ``"size"`` if a size is named;
    - else ``"single"``.
    """
    parsed = parse_caption(caption) if isinstance(caption, str) else caption
    if parsed.has_held_out:
        return "held-out"
    if parsed.is_pair:
        return "pair"
    phrase = parsed.objects[0]
    if phrase.position is not None:
        return "position"
    if phrase.size is not None:
        return "size"
    return "single"


@functools.cache
def _captions_by_category() -> dict[str, tuple[str, ...]]:
    captions: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    for colour, shape in _COMBOS:
        for size in (None, *SIZE_WORDS):
            for position in (None, *POSITIONS):
                parsed = ParsedCaption((ObjectPhrase(colour, shape, size, position),))
                captions[caption_category(parsed)].append(parsed.text)
    for a in _COMBOS:
        for b in _COMBOS:
            if a != b:
                for relation in RELATIONS:
                    parsed = ParsedCaption((ObjectPhrase(*a), ObjectPhrase(*b)), relation)
                    captions[caption_category(parsed)].append(parsed.text)
    return {c: tuple(sorted(v)) for c, v in captions.items()}


def enumerate_captions(category: str | None = None) -> list[str]:
    """Every valid caption of a category (all when ``None``), sorted; pairs never repeat a (colour, shape)."""
    by_category = _captions_by_category()
    if category is None:
        return sorted(c for captions in by_category.values() for c in captions)
    if category not in by_category:
        raise ValueError(f"Unknown category {category!r}; expected one of {CATEGORIES}.")
    return list(by_category[category])


# --------------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------------


def _sample_combos(rng: np.random.Generator, count: int, held_out: str) -> list[tuple[str, str]]:
    """Sample ``count`` distinct (colour, shape) combos; ``held_out`` is ``"exclude"``, ``"require"`` or ``"any"``."""
    pool = [c for c in _COMBOS if held_out != "exclude" or c not in HELD_OUT_PAIRS]
    if count == 1 and held_out == "require":
        pool = sorted(HELD_OUT_PAIRS)
    for _ in range(_MAX_TRIES):
        combos = [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]
        if held_out != "require" or any(c in HELD_OUT_PAIRS for c in combos):
            return combos
    raise RuntimeError("Could not sample colour–shape combinations.")  # pragma: no cover


def _axis_range(side: float) -> tuple[float, float]:
    """The range of a centre coordinate that keeps a box of side ``side`` inside the margin."""
    return MARGIN + side / 2, 1.0 - MARGIN - side / 2


def _sample_single_geometry(
    rng: np.random.Generator, size: str | None, position: str | None
) -> tuple[float, float, float]:
    side = float(rng.uniform(*(SIZE_RANGES[size] if size else SINGLE_SIZE_RANGE)))
    low, high = _axis_range(side)
    x_range, y_range = (low, high), (low, high)
    if position == "on the left":
        x_range = (low, min(high, LEFT_MAX))
    elif position == "on the right":
        x_range = (max(low, RIGHT_MIN), high)
    elif position == "at the top":
        y_range = (low, min(high, TOP_MAX))
    elif position == "at the bottom":
        y_range = (max(low, BOTTOM_MIN), high)
    elif position == "in the center":
        x_range = y_range = (max(low, CENTER_RANGE[0]), min(high, CENTER_RANGE[1]))
    return side, float(rng.uniform(*x_range)), float(rng.uniform(*y_range))


def boxes_gap(a: ShapeObject, b: ShapeObject) -> float:
    """The gap between two boxes: the larger of their separations along ``x`` and ``y`` (negative if they overlap)."""
    reach = (a.side + b.side) / 2
    return max(abs(a.cx - b.cx) - reach, abs(a.cy - b.cy) - reach)


def _sample_pair_geometry(
    rng: np.random.Generator, combos: list[tuple[str, str]], relation: str
) -> tuple[ShapeObject, ShapeObject]:
    """
    Two boxes that obey the margin, the gap and the relation. The sides are drawn once (so they stay uniform in
    :data:`~.world.PAIR_SIZE_RANGE`; every pair of sides admits valid centres), then the centres are
    rejection-sampled, uniform over the valid ones.
    """
    sides = [float(side) for side in rng.uniform(*PAIR_SIZE_RANGE, size=2)]
    ranges = [_axis_range(side) for side in sides]
    for _ in range(_MAX_TRIES):
        a, b = (
            ShapeObject(colour, shape, side, *(float(v) for v in rng.uniform(low, high, size=2)))
            for (colour, shape), side, (low, high) in zip(combos, sides, ranges, strict=True)
        )
        if relation_holds(relation, a.center, b.center) and boxes_gap(a, b) >= PAIR_GAP:
            return a, b
    raise RuntimeError("Could not place a pair of objects.")  # pragma: no cover


def sample_scene(rng: np.random.Generator, mode: str = "train", category: str | None = None) -> Scene:
    """
    Sample a caption and a scene whose geometry obeys every placement rule of the caption.

    Without ``category``, about 45 % of scenes are single objects (each naming its size and, independently, its
    position with probability 1/2) and 55 % are pairs in a random relation. Object sizes are uniform in the range of
    their size word (or the default range), centres uniform over the positions the rules allow.

    Args:
        rng: the random generator.
        mode: ``"train"`` never puts a held-out colour–shape combination anywhere in the scene; ``"heldout"`` always
            names at least one; ``"eval"`` allows any combination.
        category: force a category of :data:`~.world.CATEGORIES` (``"held-out"`` requires ``mode != "train"``;
            ``mode="heldout"`` allows only ``"held-out"``).

    Returns:
        A :class:`~.world.Scene` whose objects are in caption order.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}.")
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"Unknown category {category!r}; expected one of {CATEGORIES}.")
    if mode == "train" and category == "held-out":
        raise ValueError("Training scenes never contain held-out combinations; use mode='eval' or 'heldout'.")
    if mode == "heldout" and category not in (None, "held-out"):
        raise ValueError(f"mode='heldout' only samples the 'held-out' category, not {category!r}.")

    held_out = {"train": "exclude", "eval": "any", "heldout": "require"}[mode]
    if category == "held-out":
        held_out = "require"
    elif category is not None:
        held_out = "exclude"

    if category in (None, "held-out"):
        is_pair = bool(rng.random() < PAIR_PROBABILITY)
        name_size = bool(rng.random() < SIZE_PROBABILITY)
        name_position = bool(rng.random() < POSITION_PROBABILITY)
    else:
        is_pair = category == "pair"
        name_size = category == "size" or (category == "position" and bool(rng.random() < SIZE_PROBABILITY))
        name_position = category == "position"

    if is_pair:
        combos = _sample_combos(rng, 2, held_out)
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
        parsed = ParsedCaption((ObjectPhrase(*combos[0]), ObjectPhrase(*combos[1])), relation)
    else:
        ((colour, shape),) = _sample_combos(rng, 1, held_out)
        size = SIZE_WORDS[int(rng.integers(len(SIZE_WORDS)))] if name_size else None
        position = POSITIONS[int(rng.integers(len(POSITIONS)))] if name_position else None
        parsed = ParsedCaption((ObjectPhrase(colour, shape, size, position),))
    return scene_from_caption(rng, parsed)


def scene_from_caption(rng: np.random.Generator, caption: str | ParsedCaption) -> Scene:
    """
    Sample a geometry for a given caption: sizes uniform in their ranges, centres uniform over the positions that
    obey every placement rule (margin, position, relation, and the gap between the boxes of a pair).

    Raises:
        ValueError: if the caption does not parse, or names the same colour and shape twice.
    """
    parsed = parse_caption(caption) if isinstance(caption, str) else caption
    if parsed.is_pair:
        a, b = parsed.objects
        if (a.colour, a.shape) == (b.colour, b.shape):
            raise ValueError(f"A pair never repeats a colour and shape: {parsed.text!r}.")
        assert parsed.relation is not None
        objects: tuple[ShapeObject, ...] = _sample_pair_geometry(
            rng, [(a.colour, a.shape), (b.colour, b.shape)], parsed.relation
        )
    else:
        phrase = parsed.objects[0]
        side, cx, cy = _sample_single_geometry(rng, phrase.size, phrase.position)
        objects = (ShapeObject(phrase.colour, phrase.shape, side, cx, cy),)
    return Scene(objects=objects, caption=parsed.text, category=caption_category(parsed))


def sample_eval_prompts(n: int, seed: int = 0) -> list[str]:
    """
    A deterministic evaluation prompt set stratified over :data:`~.world.CATEGORIES`.

    Each category gets ``n // 5`` prompts (the first ``n % 5`` categories one more), drawn without replacement from
    every caption of the category (see :func:`enumerate_captions`), so prompts are unique until a category runs out
    (``single`` has 20 captions, ``size`` 40), after which it starts a new shuffled pass. ``held-out`` alternates
    single-object and pair captions. Prompts are returned grouped by category, in :data:`~.world.CATEGORIES` order.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}.")
    rng = np.random.default_rng(seed)

    def draw(pool: list[str], count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            out.extend(pool[i] for i in rng.permutation(len(pool))[: count - len(out)])
        return out

    prompts: list[str] = []
    for index, category in enumerate(CATEGORIES):
        count = n // len(CATEGORIES) + (1 if index < n % len(CATEGORIES) else 0)
        pool = enumerate_captions(category)
        if category != "held-out":
            prompts.extend(draw(pool, count))
            continue
        interleaved: list[str] = [""] * count
        interleaved[0::2] = draw([c for c in pool if not parse_caption(c).is_pair], (count + 1) // 2)
        interleaved[1::2] = draw([c for c in pool if parse_caption(c).is_pair], count // 2)
        prompts.extend(interleaved)
    return prompts
