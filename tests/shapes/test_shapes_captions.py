"""Caption grammar, categories, evaluation prompts, and the sampler's placement rules (checked numerically).

The placement rules are re-stated here with the spec's literal numbers rather than imported, so that a wrong
constant in the package fails these tests.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from unclip_pipelines.shapes import (
    CATEGORIES,
    ObjectPhrase,
    ParsedCaption,
    caption_category,
    enumerate_captions,
    parse_caption,
    sample_eval_prompts,
    sample_scene,
    scene_from_caption,
)

HELD_OUT = {("purple", "triangle"), ("yellow", "square"), ("cyan", "circle"), ("green", "diamond")}
NUM_SAMPLES = 4000


def check_placement(scene) -> None:
    """Assert that a scene obeys every placement rule of its caption (spec numbers)."""
    parsed = parse_caption(scene.caption)
    assert len(scene.objects) == len(parsed.objects)
    for obj, phrase in zip(scene.objects, parsed.objects, strict=True):
        assert (obj.colour, obj.shape) == (phrase.colour, phrase.shape)
        s, cx, cy = obj.side, obj.cx, obj.cy
        assert cx - s / 2 >= 0.03 - 1e-9 and cx + s / 2 <= 0.97 + 1e-9
        assert cy - s / 2 >= 0.03 - 1e-9 and cy + s / 2 <= 0.97 + 1e-9
        low, high = {"small": (0.18, 0.27), "large": (0.38, 0.48), None: (0.18, 0.48)}[phrase.size]
        if parsed.is_pair:
            low, high = 0.20, 0.32
        assert low <= s <= high
        position_ok = {
            None: True,
            "on the left": cx <= 0.35,
            "on the right": cx >= 0.65,
            "at the top": cy <= 0.35,
            "at the bottom": cy >= 0.65,
            "in the center": 0.42 <= cx <= 0.58 and 0.42 <= cy <= 0.58,
        }[phrase.position]
        assert position_ok, (scene.caption, obj)
    if parsed.is_pair:
        a, b = scene.objects
        assert (a.colour, a.shape) != (b.colour, b.shape)
        dx, dy = b.cx - a.cx, b.cy - a.cy
        relation_ok = {
            "to the left of": dx >= 0.15 and abs(dy) <= 0.25,
            "to the right of": -dx >= 0.15 and abs(dy) <= 0.25,
            "above": dy >= 0.15 and abs(dx) <= 0.25,
            "below": -dy >= 0.15 and abs(dx) <= 0.25,
        }[parsed.relation]
        assert relation_ok, (scene.caption, a, b)
        # Boxes disjoint with a gap of at least 0.04 W along x or y.
        gap_x = max(a.box[0], b.box[0]) - min(a.box[2], b.box[2])
        gap_y = max(a.box[1], b.box[1]) - min(a.box[3], b.box[3])
        assert max(gap_x, gap_y) >= 0.04 - 1e-9, (scene.caption, a, b)


@pytest.fixture(scope="module")
def train_scenes():
    rng = np.random.default_rng(0)
    return [sample_scene(rng, mode="train") for _ in range(NUM_SAMPLES)]


def test_train_scenes_obey_every_placement_rule(train_scenes):
    for scene in train_scenes:
        check_placement(scene)


@pytest.mark.parametrize("mode", ["eval", "heldout"])
def test_eval_and_heldout_scenes_obey_every_placement_rule(mode):
    rng = np.random.default_rng(1)
    for _ in range(1000):
        check_placement(sample_scene(rng, mode=mode))


def test_train_mode_never_emits_a_held_out_combination(train_scenes):
    for scene in train_scenes:
        assert not {(o.colour, o.shape) for o in scene.objects} & HELD_OUT, scene.caption
        assert scene.category != "held-out"


def test_heldout_mode_always_names_a_held_out_combination():
    rng = np.random.default_rng(2)
    scenes = [sample_scene(rng, mode="heldout") for _ in range(1000)]
    for scene in scenes:
        assert any((p.colour, p.shape) in HELD_OUT for p in parse_caption(scene.caption).objects), scene.caption
        assert scene.category == "held-out"
    seen = Counter((o.colour, o.shape) for s in scenes for o in s.objects if (o.colour, o.shape) in HELD_OUT)
    assert set(seen) == HELD_OUT  # every held-out pair is exercised
    assert 0.45 < np.mean([len(s.objects) == 2 for s in scenes]) < 0.65  # both singles and pairs


def test_eval_mode_mixes_held_out_and_seen_combinations():
    rng = np.random.default_rng(3)
    categories = Counter(sample_scene(rng, mode="eval").category for _ in range(2000))
    assert set(categories) == set(CATEGORIES)


def test_training_mix(train_scenes):
    pairs = [s for s in train_scenes if len(s.objects) == 2]
    singles = [parse_caption(s.caption).objects[0] for s in train_scenes if len(s.objects) == 1]
    assert len(pairs) / NUM_SAMPLES == pytest.approx(0.55, abs=0.03)
    assert np.mean([p.size is not None for p in singles]) == pytest.approx(0.5, abs=0.04)
    assert np.mean([p.position is not None for p in singles]) == pytest.approx(0.5, abs=0.04)
    relations = Counter(parse_caption(s.caption).relation for s in pairs)
    assert set(relations) == {"to the left of", "to the right of", "above", "below"}
    assert set(Counter(p.position for p in singles)) == {
        None,
        "on the left",
        "on the right",
        "at the top",
        "at the bottom",
        "in the center",
    }


def test_sizes_are_uniform_in_their_ranges():
    rng = np.random.default_rng(6)
    sides = {"pair": [], "small": [], "large": [], None: []}
    for _ in range(3000):
        scene = sample_scene(rng, mode="eval")
        parsed = parse_caption(scene.caption)
        for obj, phrase in zip(scene.objects, parsed.objects, strict=True):
            sides["pair" if parsed.is_pair else phrase.size].append(obj.side)
    for key, (low, high) in {
        "pair": (0.20, 0.32),
        "small": (0.18, 0.27),
        "large": (0.38, 0.48),
        None: (0.18, 0.48),
    }.items():
        values = np.asarray(sides[key])
        assert len(values) > 300
        # Uniform: mean at the middle, quartiles at a quarter and three quarters of the range.
        assert values.mean() == pytest.approx((low + high) / 2, abs=0.01 * (high - low) + 0.002)
        quartiles = np.quantile(values, [0.25, 0.75])
        assert quartiles == pytest.approx([low + (high - low) / 4, low + 3 * (high - low) / 4], abs=0.04 * (high - low))


@pytest.mark.parametrize("category", CATEGORIES)
def test_forced_category(category):
    rng = np.random.default_rng(4)
    mode = "heldout" if category == "held-out" else "train"
    for _ in range(200):
        scene = sample_scene(rng, mode=mode, category=category)
        assert scene.category == category == caption_category(scene.caption)
        check_placement(scene)


def test_sampler_argument_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="held-out"):
        sample_scene(rng, mode="train", category="held-out")
    with pytest.raises(ValueError, match="heldout"):
        sample_scene(rng, mode="heldout", category="pair")
    with pytest.raises(ValueError, match="mode"):
        sample_scene(rng, mode="test")
    with pytest.raises(ValueError, match="category"):
        sample_scene(rng, category="colour")
    with pytest.raises(ValueError, match="repeats"):
        scene_from_caption(rng, "a red circle above a red circle")


def test_sampler_is_deterministic_per_seed():
    first = [sample_scene(np.random.default_rng(7)) for _ in range(3)]
    again = [sample_scene(np.random.default_rng(7)) for _ in range(3)]
    assert first == again
    other = sample_scene(np.random.default_rng(8))
    assert other != first[0]


def test_scene_from_caption_obeys_the_caption():
    rng = np.random.default_rng(5)
    for caption in enumerate_captions()[::7]:
        scene = scene_from_caption(rng, caption)
        assert scene.caption == caption
        check_placement(scene)


def test_parse_caption_round_trips_every_caption(train_scenes):
    for caption in [s.caption for s in train_scenes] + enumerate_captions():
        assert parse_caption(caption).text == caption


def test_parse_caption_structure():
    assert parse_caption("a large yellow diamond on the left") == ParsedCaption(
        (ObjectPhrase("yellow", "diamond", "large", "on the left"),)
    )
    assert parse_caption("a cyan diamond above a red triangle") == ParsedCaption(
        (ObjectPhrase("cyan", "diamond"), ObjectPhrase("red", "triangle")), "above"
    )
    assert parse_caption("  A Small  blue TRIANGLE at the top ") == ParsedCaption(
        (ObjectPhrase("blue", "triangle", "small", "at the top"),)
    )


@pytest.mark.parametrize(
    "caption",
    [
        "",
        "red circle",
        "a red circle.",
        "an red circle",
        "a circle",
        "a red",
        "a big red circle",
        "a red circle small",
        "a small large red circle",
        "a red circle on the left at the top",
        "a red circle in the centre",
        "a red circle left of a blue square",
        "a red circle to the left of blue square",
        "a small red circle to the left of a blue square",
        "a red circle to the left of a blue square on the right",
        "a red circle above a blue square above a green triangle",
        "a red circle and a blue square",
        "a orange circle",
        "a red hexagon",
    ],
)
def test_parse_caption_rejects_malformed_captions(caption):
    with pytest.raises(ValueError, match="Cannot parse caption"):
        parse_caption(caption)


def test_parse_caption_names_the_unknown_word():
    with pytest.raises(ValueError, match="unknown word 'hexagon'"):
        parse_caption("a red hexagon")


@pytest.mark.parametrize(
    "caption, category",
    [
        ("a red circle", "single"),
        ("a small red circle", "size"),
        ("a red circle at the top", "position"),
        ("a large red circle at the top", "position"),
        ("a red circle to the left of a blue square", "pair"),
        ("a purple triangle", "held-out"),
        ("a large yellow square in the center", "held-out"),
        ("a red circle below a cyan circle", "held-out"),
        ("a green diamond to the right of a red circle", "held-out"),
        ("a green square above a yellow triangle", "pair"),
    ],
)
def test_caption_category(caption, category):
    assert caption_category(caption) == category


def test_enumerate_captions():
    counts = {c: len(enumerate_captions(c)) for c in CATEGORIES}
    # 20 seen colour-shape pairs; 3 size options x 5 positions for "position"; 20*19 ordered pairs x 4 relations.
    assert counts == {"single": 20, "size": 40, "position": 300, "pair": 1520, "held-out": 4 * 18 + 172 * 4}
    for category in CATEGORIES:
        assert all(caption_category(c) == category for c in enumerate_captions(category))


def test_sample_eval_prompts_is_stratified_deterministic_and_unique():
    prompts = sample_eval_prompts(100, seed=0)
    assert prompts == sample_eval_prompts(100, seed=0)
    assert prompts != sample_eval_prompts(100, seed=1)
    assert len(prompts) == len(set(prompts)) == 100
    assert Counter(caption_category(p) for p in prompts) == {c: 20 for c in CATEGORIES}
    held_out = [parse_caption(p) for p in prompts if caption_category(p) == "held-out"]
    assert sum(p.is_pair for p in held_out) == 10  # held-out singles and pairs alternate

    odd = sample_eval_prompts(7, seed=0)
    assert Counter(caption_category(p) for p in odd) == {
        "single": 2,
        "size": 2,
        "position": 1,
        "pair": 1,
        "held-out": 1,
    }
    # More prompts than the "single" category has captions: every caption appears before any repeats.
    many = [p for p in sample_eval_prompts(250, seed=0) if caption_category(p) == "single"]
    assert len(many) == 50 and len(set(many[:20])) == 20 and len(set(many)) == 20
