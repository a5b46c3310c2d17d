"""benchmarks/clip_position_learnability.py on a tiny image tower: the renders it trains on and the curve it reports."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from benchmarks import clip_position_learnability as bench  # noqa: E402
from unclip_pipelines.shapes import judge_image  # noqa: E402


def test_position_renders_name_the_position_the_judge_sees():
    images, labels = bench.position_renders(10, seed=0)
    assert images.shape == (10, 3, 128, 128) and labels.shape == (10,)
    assert labels.max() < len(bench.POSITIONS)
    from PIL import Image

    for image, label in zip(images, labels):
        # a render of "a <colour> <shape> <position>" must be judged at that position, whatever colour and shape
        verdict = judge_image(Image.fromarray(image.permute(1, 2, 0).numpy()), "a red circle " + bench.POSITIONS[label])
        assert verdict.position


def test_learnability_curve_per_init(clip_dir, tmp_path):
    out = tmp_path / "curve.json"
    results = bench.main([
        "--clip", str(clip_dir), "--position-embedding-std", "0.02", "1.0", "--steps", "2", "--eval-every", "1",
        "--num-train", "16", "--num-test", "8", "--batch-size", "4", "--output", str(out),
    ])
    assert sorted(results) == ["0.02", "1.0"]
    assert all(sorted(curve) == [1, 2] and all(0 <= a <= 1 for a in curve.values()) for curve in results.values())
    assert out.exists()
    with pytest.raises(SystemExit):
        bench.main(["--steps", "x"])
