"""The dataset writer, the in-memory batch generator and the evaluation report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from unclip_pipelines.shapes import (
    BACKGROUND,
    CATEGORIES,
    caption_category,
    evaluate_images,
    judge_image,
    parse_caption,
    render_batch,
    render_scene,
    sample_eval_prompts,
    scene_from_caption,
    write_dataset,
)

HELD_OUT = {("purple", "triangle"), ("yellow", "square"), ("cyan", "circle"), ("green", "diamond")}


def test_write_dataset_loads_as_an_imagefolder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    root = write_dataset(tmp_path / "shapes", num_images=12, size=64, seed=3)
    lines = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    assert [line["file_name"] for line in lines] == [f"images/{i:05d}.png" for i in range(12)]
    assert all((root / line["file_name"]).is_file() for line in lines)

    dataset = datasets.load_dataset("imagefolder", data_dir=str(root), split="train", cache_dir=str(tmp_path / "c"))
    assert set(dataset.column_names) == {"image", "text"} and len(dataset) == 12
    assert sorted(dataset["text"]) == sorted(line["text"] for line in lines)
    for row in dataset:
        assert row["image"].size == (64, 64)
        # Each image depicts its own caption (the captions are not shuffled against the images).
        assert judge_image(row["image"].convert("RGB"), row["text"]).correct, row["text"]


def test_write_dataset_is_deterministic_and_train_mode(tmp_path):
    first = write_dataset(tmp_path / "a", num_images=40, size=64, seed=5)
    second = write_dataset(tmp_path / "b", num_images=40, size=64, seed=5)
    assert (first / "metadata.jsonl").read_text() == (second / "metadata.jsonl").read_text()
    assert (first / "images/00007.png").read_bytes() == (second / "images/00007.png").read_bytes()
    for line in (first / "metadata.jsonl").read_text().splitlines():
        parsed = parse_caption(json.loads(line)["text"])
        assert not {(p.colour, p.shape) for p in parsed.objects} & HELD_OUT


def test_render_batch():
    images, captions = render_batch(np.random.default_rng(0), 200, size=64, mode="train")
    assert images.shape == (200, 64, 64, 3) and images.dtype == np.uint8 and len(captions) == 200
    assert len(set(captions)) > 100
    for caption in captions:
        assert not {(p.colour, p.shape) for p in parse_caption(caption).objects} & HELD_OUT
    for image, caption in list(zip(images, captions, strict=True))[:40]:
        assert judge_image(image, caption).correct, caption
    again, again_captions = render_batch(np.random.default_rng(0), 200, size=64, mode="train")
    assert again_captions == captions and np.array_equal(again, images)
    _, held_out_captions = render_batch(np.random.default_rng(0), 20, size=64, mode="heldout")
    assert all(caption_category(c) == "held-out" for c in held_out_captions)


@pytest.fixture(scope="module")
def oracle_images():
    """Two correct renders per evaluation prompt (30 prompts, 6 per category)."""
    rng = np.random.default_rng(0)
    prompts = sample_eval_prompts(30, seed=0)
    return {p: [render_scene(scene_from_caption(rng, p), size=64) for _ in range(2)] for p in prompts}


def test_evaluate_images_on_correct_images(oracle_images, tmp_path):
    report = evaluate_images(oracle_images)
    assert report.num_images == 60 and report.overall.accuracy == 1.0 and report.category_mean == 1.0
    assert {name: s.total for name, s in report.categories.items()} == {c: 12 for c in CATEGORIES}
    assert report.attributes["count"].total == 60
    expected_relation = 2 * sum(parse_caption(p).is_pair for p in oracle_images)
    assert report.attributes["relation"].total == expected_relation
    expected_size = 2 * sum(parse_caption(p).objects[0].size is not None for p in oracle_images)
    assert report.attributes["size"].total == expected_size > 0

    path = report.to_json(tmp_path / "report" / "shapes.json")
    data = json.loads(path.read_text())
    assert data["overall"] == {"correct": 60, "total": 60, "accuracy": 1.0}
    assert set(data["categories"]) == set(CATEGORIES) and len(data["prompts"]) == 30

    markdown = report.to_markdown()
    assert markdown.startswith("| category | accuracy | correct | images |")
    for name in CATEGORIES + ("count", "binding", "relation"):
        assert f"| {name} | 1.000 |" in markdown


def test_evaluate_images_counts_failures(oracle_images):
    images = dict(oracle_images)
    blank = Image.new("RGB", (64, 64), BACKGROUND)
    pair_prompt = next(p for p in images if caption_category(p) == "pair")
    single_prompt = next(p for p in images if caption_category(p) == "single")
    images[pair_prompt] = [blank, images[pair_prompt][0]]
    images[single_prompt] = [blank, blank]
    report = evaluate_images(images)
    assert report.categories["pair"].correct == 11 and report.categories["single"].correct == 10
    assert report.overall.correct == 57 and report.overall.accuracy == pytest.approx(57 / 60)
    assert report.attributes["count"].correct == 57
    assert report.attributes["relation"].correct == report.attributes["relation"].total - 1
    assert report.category_mean == pytest.approx(np.mean([1, 1, 1, 11 / 12, 10 / 12]))
    assert "| pair | 0.917 | 11 | 12 |" in report.to_markdown()


def test_evaluate_images_rejects_bad_input():
    with pytest.raises(TypeError, match="sequence of images"):
        evaluate_images({"a red circle": Image.new("RGB", (64, 64), BACKGROUND)})
    with pytest.raises(ValueError, match="Cannot parse"):
        evaluate_images({"a red blob": [Image.new("RGB", (64, 64), BACKGROUND)]})
