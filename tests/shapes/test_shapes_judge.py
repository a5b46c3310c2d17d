"""The judge: accuracy on the world's own renders (clean and degraded), rejection of wrong captions, and semantics."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from unclip_pipelines.shapes import (
    BACKGROUND,
    CATEGORIES,
    COLOURS,
    SHAPES,
    ShapeObject,
    detect_objects,
    judge_detections,
    judge_image,
    parse_caption,
    render_objects,
)

from .conftest import degrade

MIRROR = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}
OPPOSITE_POSITION = {
    "on the left": "on the right",
    "on the right": "on the left",
    "at the top": "at the bottom",
    "at the bottom": "at the top",
    "in the center": "on the left",
}


def accuracy_by_category(scenes, images) -> tuple[float, dict[str, float]]:
    verdicts = defaultdict(list)
    for scene, image in zip(scenes, images, strict=True):
        verdicts[scene.category].append(judge_image(image, scene.caption).correct)
    overall = float(np.mean([v for vs in verdicts.values() for v in vs]))
    return overall, {c: float(np.mean(v)) for c, v in verdicts.items()}


# --------------------------------------------------------------------------------------------------------------------
# Accuracy on the world's own renders
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128])
def test_judge_accepts_clean_renders(eval_scenes, rendered, size):
    overall, per_category = accuracy_by_category(eval_scenes, rendered(size))
    assert set(per_category) == set(CATEGORIES)
    assert overall >= 0.99, per_category
    assert min(per_category.values()) >= 0.99, per_category


def test_judge_accepts_blurred_noisy_renders_at_128(eval_scenes, rendered):
    """σ = 1.5 px blur + σ = 12 noise at 128 px (measured: 300/300 correct)."""
    rng = np.random.default_rng(0)
    images = [degrade(image, rng, sigma=1.5, noise=12) for image in rendered(128)]
    overall, per_category = accuracy_by_category(eval_scenes, images)
    assert overall >= 0.97, per_category
    assert min(per_category.values()) >= 0.95, per_category


def test_judge_accepts_blurred_noisy_renders_at_64_with_resolution_scaled_blur(eval_scenes, rendered):
    """The same degradation relative to the canvas (σ = 0.75 px at 64 px) + σ = 12 noise (measured: ~97 %)."""
    rng = np.random.default_rng(0)
    images = [degrade(image, rng, sigma=0.75, noise=12) for image in rendered(64)]
    overall, per_category = accuracy_by_category(eval_scenes, images)
    assert overall >= 0.95, per_category
    assert min(per_category.values()) >= 0.9, per_category


def test_judge_on_heavily_blurred_renders_at_64(eval_scenes, rendered):
    """
    Known limit of the spec's judge: σ = 1.5 px at 64 px is twice the blur relative to the shapes. The foreground
    threshold (60 ≈ 25–30 % of the contrast) then grows every mask by ~0.9 px and rounds corners, so small squares
    and diamonds (11–17 px) match the circle template best. Measured ~78 %; this pins it against regressions.
    """
    rng = np.random.default_rng(0)
    images = [degrade(image, rng, sigma=1.5, noise=12) for image in rendered(64)]
    overall, per_category = accuracy_by_category(eval_scenes, images)
    assert overall >= 0.7, per_category


@pytest.mark.parametrize("size", [64, 128])
def test_detections_match_the_scene_geometry(eval_scenes, rendered, size):
    for scene, image in zip(eval_scenes[::3], rendered(size)[::3], strict=True):
        found = detect_objects(image)
        assert len(found) == len(scene.objects)
        for truth in scene.objects:
            match = min(found, key=lambda o: abs(o.cx - truth.cx) + abs(o.cy - truth.cy))
            assert (match.colour, match.shape) == (truth.colour, truth.shape)
            assert abs(match.cx - truth.cx) <= 1 / size and abs(match.cy - truth.cy) <= 1 / size
            assert abs(match.side - truth.side) <= 2 / size  # edge pixels ≥ ~1/8 covered count


# --------------------------------------------------------------------------------------------------------------------
# Wrong captions are rejected
# --------------------------------------------------------------------------------------------------------------------


def wrong_captions(scene, rng: np.random.Generator) -> dict[str, str]:
    """Captions that the scene's geometry does not satisfy, by kind of error."""
    parsed = parse_caption(scene.caption)
    phrases = list(parsed.objects)
    i = int(rng.integers(len(phrases)))

    def with_phrase(**changes) -> str:
        new = phrases.copy()
        new[i] = replace(new[i], **changes)
        return replace(parsed, objects=tuple(new)).text

    out = {
        "colour": with_phrase(colour=str(rng.choice([c for c in COLOURS if c != phrases[i].colour]))),
        "shape": with_phrase(shape=str(rng.choice([s for s in SHAPES if s != phrases[i].shape]))),
    }
    if parsed.is_pair:
        out["relation"] = replace(parsed, relation=MIRROR[parsed.relation]).text
        a, b = phrases
        if a.colour != b.colour:
            swapped = (replace(a, colour=b.colour), replace(b, colour=a.colour))
            out["binding"] = replace(parsed, objects=swapped).text
        return out
    phrase, obj = phrases[0], scene.objects[0]
    if phrase.size is not None:
        out["size"] = with_phrase(size="large" if phrase.size == "small" else "small")
    elif abs(obj.side - 0.33) > 0.03:
        out["size"] = with_phrase(size="large" if obj.side < 0.33 else "small")
    if phrase.position is not None:
        out["position"] = with_phrase(position=OPPOSITE_POSITION[phrase.position])
    else:  # a position the centre misses by at least 0.03 W beyond the judge's loosened threshold
        cx, cy = obj.cx, obj.cy
        missed = {
            "on the left": cx > 0.43,
            "on the right": cx < 0.57,
            "at the top": cy > 0.43,
            "at the bottom": cy < 0.57,
            "in the center": max(abs(cx - 0.5), abs(cy - 0.5)) > 0.16,
        }
        out["position"] = with_phrase(position=str(rng.choice([p for p, miss in missed.items() if miss])))
    return out


@pytest.mark.parametrize("size", [64, 128])
def test_judge_rejects_wrong_captions(eval_scenes, rendered, size):
    rng = np.random.default_rng(1)
    rejected = defaultdict(list)
    for scene, image in zip(eval_scenes, rendered(size), strict=True):
        found = detect_objects(image)
        assert judge_detections(found, scene.caption).correct
        for kind, caption in wrong_captions(scene, rng).items():
            assert caption != scene.caption
            rejected[kind].append(not judge_detections(found, caption).correct)
    assert set(rejected) == {"colour", "shape", "relation", "binding", "size", "position"}
    for kind, verdicts in rejected.items():
        assert len(verdicts) >= 50, kind
        assert np.mean(verdicts) >= 0.99, (kind, np.mean(verdicts))


# --------------------------------------------------------------------------------------------------------------------
# Input checks and detection details
# --------------------------------------------------------------------------------------------------------------------


def test_judge_rejects_images_below_64_pixels():
    obj = ShapeObject("red", "square", 0.4, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least 64"):
        judge_image(render_objects([obj], size=32), "a red square")
    with pytest.raises(ValueError, match="at least 64"):
        judge_image(np.full((63, 63, 3), 235, dtype=np.uint8), "a red square")
    assert judge_image(render_objects([obj], size=64), "a red square").correct


def test_judge_rejects_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        judge_image(np.full((64, 96, 3), 235, dtype=np.uint8), "a red square")
    with pytest.raises(ValueError, match="RGB"):
        judge_image(np.full((64, 64), 235, dtype=np.uint8), "a red square")
    with pytest.raises(ValueError, match="Cannot parse"):
        judge_image(np.full((64, 64, 3), 235, dtype=np.uint8), "a red squares")


def test_specks_below_one_percent_are_ignored():
    image = np.asarray(render_objects([ShapeObject("red", "circle", 0.4, 0.3, 0.3)], size=128)).copy()
    image[100:112, 100:113] = (40, 90, 220)  # 156 px < 1 % of 128² = 163.84
    assert judge_image(image, "a red circle").correct
    image[100:113, 100:113] = (40, 90, 220)  # 169 px ≥ 1 %
    result = judge_image(image, "a red circle")
    assert not result.correct and not result.count and len(result.objects) == 2


def test_off_palette_colour_and_odd_shape_are_unknown():
    image = Image.new("RGB", (128, 128), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 50, 50), fill=(120, 120, 20))  # > 80 from every palette colour
    draw.rectangle((70, 90, 119, 99), fill=(220, 40, 40))  # a 50×10 bar: IoU < 0.6 with every template
    colours = {o.colour for o in detect_objects(image)}
    shapes = {o.shape for o in detect_objects(image)}
    assert colours == {"unknown", "red"} and shapes == {"circle", "unknown"}


def test_background_is_taken_from_the_border():
    image = render_objects([ShapeObject("yellow", "triangle", 0.4, 0.5, 0.5)], size=96, background=(255, 255, 255))
    assert judge_image(image, "a large yellow triangle in the center").correct


# --------------------------------------------------------------------------------------------------------------------
# Per-attribute semantics
# --------------------------------------------------------------------------------------------------------------------


def verdict(objects, caption):
    return judge_image(render_objects(objects, size=128), caption)


def test_attributes_of_a_correct_pair():
    result = verdict(
        [ShapeObject("red", "circle", 0.25, 0.25, 0.5), ShapeObject("blue", "square", 0.25, 0.75, 0.5)],
        "a red circle to the left of a blue square",
    )
    assert result.correct and result.count and result.colour and result.shape and result.binding
    assert result.relation is True and result.size is None and result.position is None


def test_swapped_binding_keeps_colour_and_shape_but_fails_binding():
    result = verdict(
        [ShapeObject("blue", "circle", 0.25, 0.25, 0.5), ShapeObject("red", "square", 0.25, 0.75, 0.5)],
        "a red circle to the left of a blue square",
    )
    assert not result.correct and not result.binding
    assert result.count and result.colour and result.shape


def test_wrong_relation_only():
    result = verdict(
        [ShapeObject("red", "circle", 0.25, 0.75, 0.5), ShapeObject("blue", "square", 0.25, 0.25, 0.5)],
        "a red circle to the left of a blue square",
    )
    assert not result.correct and result.relation is False
    assert result.count and result.colour and result.shape and result.binding


def test_missing_object():
    result = verdict([ShapeObject("red", "circle", 0.25, 0.25, 0.5)], "a red circle to the left of a blue square")
    assert not result.correct and not result.count and not result.colour and not result.binding
    assert result.shape is False and result.relation is False


def test_extra_object_fails_count_only():
    result = verdict(
        [ShapeObject("red", "circle", 0.2, 0.25, 0.5), ShapeObject("red", "circle", 0.2, 0.75, 0.5)], "a red circle"
    )
    assert not result.correct and not result.count
    assert result.colour and result.shape and result.binding


def test_size_and_position_are_judged_on_the_best_matching_object():
    objects = [ShapeObject("red", "circle", 0.45, 0.3, 0.5), ShapeObject("blue", "square", 0.2, 0.8, 0.5)]
    result = verdict(objects, "a small red circle on the right")
    # The blue square is small and on the right, but the phrase's object is the red circle: large, on the left.
    assert not result.correct and not result.count
    assert result.size is False and result.position is False and result.binding
    result = verdict(objects, "a large red circle on the left")
    assert not result.correct and result.size is True and result.position is True


def test_loosened_thresholds():
    # cx = 0.39 is not "on the left" for the sampler (≤ 0.35) but is for the judge (≤ 0.40); 0.42 is not.
    assert verdict([ShapeObject("red", "circle", 0.3, 0.39, 0.5)], "a red circle on the left").position
    assert not verdict([ShapeObject("red", "circle", 0.3, 0.42, 0.5)], "a red circle on the left").position
    assert verdict([ShapeObject("red", "circle", 0.2, 0.62, 0.6)], "a red circle in the center").position
    assert not verdict([ShapeObject("red", "circle", 0.2, 0.65, 0.5)], "a red circle in the center").position
    pair = [ShapeObject("red", "circle", 0.2, 0.35, 0.5), ShapeObject("blue", "square", 0.2, 0.47, 0.22)]
    assert verdict(pair, "a red circle to the right of a blue square").relation is False
    assert verdict(pair, "a blue square above a red circle").relation is True  # dy = 0.28 ≥ 0.10, dx = 0.12
    assert verdict(pair, "a red circle below a blue square").correct
    close = [ShapeObject("red", "circle", 0.2, 0.40, 0.5), ShapeObject("blue", "square", 0.2, 0.47, 0.22)]
    assert verdict(close, "a red circle to the left of a blue square").relation is False  # dx = 0.07 < 0.10
    apart = [ShapeObject("red", "circle", 0.2, 0.35, 0.5), ShapeObject("blue", "square", 0.2, 0.47, 0.22)]
    assert verdict(apart, "a red circle to the left of a blue square").correct  # dx = 0.12, dy = 0.28
    assert verdict(apart, "a blue square to the right of a red circle").correct
    assert verdict(close, "a blue square to the right of a red circle").relation is False
    upright = [ShapeObject("red", "circle", 0.2, 0.5, 0.35), ShapeObject("blue", "square", 0.2, 0.22, 0.47)]
    assert verdict(upright, "a red circle above a blue square").correct  # dy = 0.12, dx = 0.28
    assert verdict(upright, "a blue square below a red circle").correct
    tilted = [ShapeObject("red", "circle", 0.2, 0.5, 0.35), ShapeObject("blue", "square", 0.2, 0.18, 0.47)]
    assert verdict(tilted, "a red circle above a blue square").relation is False  # dx = 0.32 > 0.30


def test_colour_is_the_median_after_one_erosion():
    image = np.full((64, 64, 3), BACKGROUND, dtype=np.uint8)
    image[20:24, 20:34] = (40, 90, 220)  # a 4×14 blue rim (32 px) ...
    image[21:23, 21:33] = (220, 40, 40)  # ... around a 2×12 red core (24 px): the core survives the erosion
    image[40:42, 10:40] = (40, 170, 60)  # a 2×30 green bar: erosion empties it, its own pixels are used
    found = sorted(detect_objects(image), key=lambda o: o.cy)
    assert [o.colour for o in found] == ["red", "green"]
