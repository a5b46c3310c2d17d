"""The Shapes World: the benchmark world of the embedded text-to-image model.

A renderer (:func:`render_scene`), a caption grammar with a rule-obeying scene sampler (:func:`sample_scene`,
:func:`parse_caption`), an exact rule-based judge (:func:`judge_image`), dataset writers (:func:`write_dataset`,
:func:`render_batch`) and an evaluation report (:func:`evaluate_images`).
"""

from .captions import (
    ObjectPhrase,
    ParsedCaption,
    caption_category,
    enumerate_captions,
    parse_caption,
    sample_eval_prompts,
    sample_scene,
    scene_from_caption,
)
from .dataset import render_batch, write_dataset
from .evaluate import EvaluationReport, PromptResult, Score, evaluate_images
from .judge import ATTRIBUTES, DetectedObject, JudgeResult, detect_objects, judge_detections, judge_image
from .render import render_objects, render_scene, template_mask
from .world import (
    BACKGROUND,
    CATEGORIES,
    COLOURS,
    HELD_OUT_PAIRS,
    PALETTE,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZE_WORDS,
    Scene,
    ShapeObject,
)

__all__ = [
    "ATTRIBUTES",
    "BACKGROUND",
    "CATEGORIES",
    "COLOURS",
    "DetectedObject",
    "EvaluationReport",
    "HELD_OUT_PAIRS",
    "JudgeResult",
    "ObjectPhrase",
    "PALETTE",
    "POSITIONS",
    "ParsedCaption",
    "PromptResult",
    "RELATIONS",
    "SHAPES",
    "SIZE_WORDS",
    "Scene",
    "Score",
    "ShapeObject",
    "caption_category",
    "detect_objects",
    "enumerate_captions",
    "evaluate_images",
    "judge_detections",
    "judge_image",
    "parse_caption",
    "render_batch",
    "render_objects",
    "render_scene",
    "sample_eval_prompts",
    "sample_scene",
    "scene_from_caption",
    "template_mask",
    "write_dataset",
]
