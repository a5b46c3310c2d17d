import os

import numpy as np
import pytest
from PIL import Image

from unclip_pipelines.cli import main

STEPS = ["--prior-steps", "2", "--decoder-steps", "2", "--super-res-steps", "2"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    assert main(["create-tiny-model", str(folder)]) == 0
    return str(folder)


def test_generate_one_prompt(tiny_model, tmp_path):
    out = tmp_path / "out.png"
    assert main(["generate", "a red circle", "--model", tiny_model, "--seed", "3", "--output", str(out), *STEPS]) == 0
    image = Image.open(out)
    assert image.size == (128, 128)
    again = tmp_path / "again.png"
    main(["generate", "a red circle", "--model", tiny_model, "--seed", "3", "--output", str(again), *STEPS])
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(again)))


def test_generate_several_images_and_a_scheduler(tiny_model, tmp_path):
    out = tmp_path / "img.png"
    args = ["generate", "horse", "--model", tiny_model, "--num-images", "2", "--scheduler", "dpm", "--output", str(out)]
    assert main(args + STEPS) == 0
    assert sorted(os.listdir(tmp_path)) == ["img_0.png", "img_1.png"]


def test_generate_from_a_prompts_file(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\nhorse\n")
    out = tmp_path / "images"
    args = ["generate", "--prompts-file", str(prompts), "--output-dir", str(out), "--model", tiny_model]
    assert main(args + ["--num-images", "2"] + STEPS) == 0
    assert sorted(os.listdir(out)) == ["0000_0.png", "0000_1.png", "0001_0.png", "0001_1.png"]


def test_bad_cli_input(tiny_model, tmp_path, capsys):
    with pytest.raises(SystemExit, match="not both"):
        main(["generate", "horse", "--prompts-file", "x.txt", "--model", tiny_model])
    with pytest.raises(SystemExit, match="--output-dir"):
        main(["generate", "--prompts-file", "x.txt", "--model", tiny_model])
    assert main(["generate", "horse", "--model", tiny_model, "--decoder-steps", "0"]) == 2
    assert "decoder_num_inference_steps" in capsys.readouterr().err
    missing = tmp_path / "nothing"
    missing.mkdir()
    assert main(["generate", "horse", "--model", str(missing)]) == 2
    assert "model_index.json" in capsys.readouterr().err


def test_evaluate_writes_json_and_markdown(tiny_model, tmp_path, capsys):
    import json

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square above a green triangle\n")
    out = tmp_path / "eval"
    args = ["evaluate", "--model", tiny_model, "--prompts-file", str(prompts), "--images-per-prompt", "2"]
    assert main(args + ["--output-dir", str(out), "--batch-size", "4"] + STEPS) == 0
    report = json.load(open(out / "evaluation.json"))
    assert report["num_images"] == 4
    assert report["categories"]["single"]["total"] == 2 and report["categories"]["pair"]["total"] == 2
    assert report["attributes"]["relation"]["total"] == 2
    assert "| category | accuracy |" in (out / "evaluation.md").read_text()
    assert "| attribute | accuracy |" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_variation_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_variation")
    assert main(["create-tiny-model", str(folder), "--image-variation"]) == 0
    return str(folder)


def test_probe_pca_writes_the_grid_and_reuses_a_saved_pca(tiny_variation_model, tmp_path, capsys):
    from unclip_pipelines import UnCLIPImageVariationPipeline, UnCLIPPCA

    common = ["probe-pca", "--model", tiny_variation_model, "--num-scenes", "2", "--ks", "0", "3",
              "--decoder-steps", "2", "--seed", "3"]
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    assert main(common + ["--fit-scenes", "6", "--save-pca", str(tmp_path / "pca"), "--output", str(first)]) == 0
    assert "fitted a 5-component PCA on 6" in capsys.readouterr().out
    pca = UnCLIPPCA.from_pretrained(str(tmp_path / "pca"))
    assert pca.num_components == 5 and (tmp_path / "pca" / "diffusion_pytorch_model.safetensors").is_file()

    size = UnCLIPImageVariationPipeline.from_pretrained(tiny_variation_model).output_sizes[-1]
    grid = Image.open(first)
    assert grid.size == (3 * size[1], 2 * size[0])  # source + 2 values of k, 2 rows

    assert main(common + ["--pca", str(tmp_path / "pca"), "--output", str(second)]) == 0
    assert np.array_equal(np.asarray(grid), np.asarray(Image.open(second)))  # same PCA, same x_T: same grid

    # a k beyond the PCA's components is refused, naming the range
    assert main(common + ["--pca", str(tmp_path / "pca"), "--ks", "6", "--output", str(second)]) == 2
    assert "[0, 5]" in capsys.readouterr().err


def test_prior_num_candidates_flag(tiny_model, tmp_path, capsys):
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    assert main(["generate", "horse", "--model", tiny_model, "--output", str(one)] + STEPS) == 0
    assert main(["generate", "horse", "--model", tiny_model, "--output", str(two), "--prior-num-candidates", "2"]
                + STEPS) == 0
    assert not np.array_equal(np.asarray(Image.open(one)), np.asarray(Image.open(two)))  # another embedding won
    assert main(["generate", "horse", "--model", tiny_model, "--prior-num-candidates", "0"] + STEPS) == 2
    assert "prior_num_candidates" in capsys.readouterr().err
