"""Scoring generated images against their prompts with the Shapes World judge.

Generation is the caller's job; this module only judges images and aggregates the verdicts::

    prompts = sample_eval_prompts(100, seed=0)
    images = {prompt: pipe(prompt, num_images_per_prompt=4).images for prompt in prompts}
    report = evaluate_images(images)
    print(report.to_markdown())
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .captions import caption_category, parse_caption
from .judge import ATTRIBUTES, JudgeResult, judge_image
from .world import CATEGORIES


@dataclass
class Score:
    """How many of ``total`` judged items were correct."""

    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float | None:
        """``correct / total``, or ``None`` when nothing was judged."""
        return self.correct / self.total if self.total else None

    def add(self, ok: bool) -> None:
        self.correct += int(ok)
        self.total += 1

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "total": self.total, "accuracy": self.accuracy}


@dataclass
class PromptResult:
    """The verdicts on the images of one prompt."""

    prompt: str
    category: str
    results: list[JudgeResult]

    @property
    def num_correct(self) -> int:
        return sum(r.correct for r in self.results)


@dataclass
class EvaluationReport:
    """
    Aggregated verdicts.

    Attributes:
        overall: fraction of all images judged correct.
        category_mean: mean of the per-category accuracies (GenEval's overall score; categories with no image are
            left out).
        categories: correctness per category of :data:`~.world.CATEGORIES`.
        attributes: per-attribute checks of :class:`~.judge.JudgeResult` (``count``, ``colour``, ``shape``,
            ``binding``, ``size``, ``position``, ``relation``), each over the images whose prompt names it.
        prompts: the verdicts per prompt.
    """

    overall: Score
    categories: dict[str, Score]
    attributes: dict[str, Score]
    prompts: list[PromptResult] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return self.overall.total

    @property
    def category_mean(self) -> float | None:
        accuracies = [s.accuracy for s in self.categories.values() if s.accuracy is not None]
        return float(np.mean(accuracies)) if accuracies else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (per-prompt counts, not the detected objects)."""
        return {
            "num_images": self.num_images,
            "overall": self.overall.to_dict(),
            "category_mean": self.category_mean,
            "categories": {name: score.to_dict() for name, score in self.categories.items()},
            "attributes": {name: score.to_dict() for name, score in self.attributes.items()},
            "prompts": [
                {
                    "prompt": p.prompt,
                    "category": p.category,
                    "correct": p.num_correct,
                    "total": len(p.results),
                    "attributes": [r.attributes() for r in p.results],
                    "objects": [[asdict(o) for o in r.objects] for r in p.results],
                }
                for p in self.prompts
            ],
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as indented JSON to ``path`` and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def to_markdown(self) -> str:
        """Two Markdown tables: accuracy per category (and overall), and per attribute."""

        def row(name: str, score: Score) -> str:
            accuracy = "–" if score.accuracy is None else f"{score.accuracy:.3f}"
            return f"| {name} | {accuracy} | {score.correct} | {score.total} |"

        lines = ["| category | accuracy | correct | images |", "| --- | ---: | ---: | ---: |"]
        lines += [row(name, score) for name, score in self.categories.items()]
        lines.append(row("**overall**", self.overall))
        mean = "–" if self.category_mean is None else f"{self.category_mean:.3f}"
        lines.append(f"| **category mean** | {mean} | | |")
        lines += ["", "| attribute | accuracy | correct | images |", "| --- | ---: | ---: | ---: |"]
        lines += [row(name, score) for name, score in self.attributes.items()]
        return "\n".join(lines) + "\n"


def evaluate_images(images_by_prompt: Mapping[str, Sequence[Image.Image | np.ndarray]]) -> EvaluationReport:
    """
    Judge generated images and aggregate the verdicts per category and per attribute.

    Args:
        images_by_prompt: for each prompt (a caption of the Shapes World grammar), the images generated for it (PIL
            images or ``H × W × 3`` arrays in [0, 255], square, at least 64 pixels a side).

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        ValueError: if a prompt does not parse or an image cannot be judged.
    """
    categories = {name: Score() for name in CATEGORIES}
    attributes = {name: Score() for name in ATTRIBUTES}
    overall = Score()
    prompts = []
    for prompt, images in images_by_prompt.items():
        if isinstance(images, (Image.Image, np.ndarray)):
            raise TypeError(f"Expected a sequence of images for prompt {prompt!r}, got a single image.")
        parsed = parse_caption(prompt)
        category = caption_category(parsed)
        results = [judge_image(image, parsed) for image in images]
        for result in results:
            overall.add(result.correct)
            categories[category].add(result.correct)
            for name, ok in result.attributes().items():
                if ok is not None:
                    attributes[name].add(ok)
        prompts.append(PromptResult(prompt=prompt, category=category, results=results))
    return EvaluationReport(overall=overall, categories=categories, attributes=attributes, prompts=prompts)
