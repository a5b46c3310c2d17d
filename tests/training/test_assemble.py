"""The stage outputs assemble into one folder that both pipelines load, and it generates 128 px images."""

import json

import huggingface_hub
import torch
from PIL import Image

from training import assemble_pipeline, train_shapes_world
from unclip_pipelines import UnCLIPImageVariationPipeline, UnCLIPPipeline

class RepoUrl(str):
    def __new__(cls, repo_id):
        url = super().__new__(cls, f"https://huggingface.co/{repo_id}")
        url.repo_id = repo_id
        return url


FEW = dict(decoder_num_inference_steps=2, super_res_num_inference_steps=2)


def test_assembled_folder_loads_in_both_pipelines(
    clip_dir, prior_dir, decoder_dir, superres_dir, data_dir, tmp_path, monkeypatch
):
    calls = {}
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: calls.setdefault("repo", RepoUrl(repo_id)))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.setdefault("upload", kw))
    out = tmp_path / "pipeline"
    assemble_pipeline.main([
        "--clip_dir", str(clip_dir), "--prior_dir", str(prior_dir), "--decoder_dir", str(decoder_dir),
        "--super_res_dir", str(superres_dir), "--output_dir", str(out), "--decoder_guidance_scale", "3",
        "--push_to_hub", "--hub_model_id", "someone/shapes-unclip",
    ])
    assert calls["upload"]["repo_id"] == "someone/shapes-unclip" and calls["upload"]["folder_path"] == str(out)
    assert "someone/shapes-unclip" in (out / "README.md").read_text()
    assert assemble_pipeline.load_sampling_defaults(str(out))["decoder_guidance_scale"] == 3
    index = json.loads((out / "model_index.json").read_text())
    assert index["image_encoder"] == ["transformers", "CLIPVisionModelWithProjection"]
    assert "sampling_defaults.json" in (out / "README.md").read_text()

    pipe = UnCLIPPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", prior_num_inference_steps=2, generator=torch.Generator().manual_seed(0), **FEW).images[0]
    assert image.size == (128, 128)

    variation = UnCLIPImageVariationPipeline.from_pretrained(out)
    variation.set_progress_bar_config(disable=True)
    source = Image.open(next((data_dir / "images").glob("*.png")))
    assert variation(source, generator=torch.Generator().manual_seed(0), **FEW).images[0].size == (128, 128)


def test_one_command_quick(tmp_path, monkeypatch):
    # as on a machine with native bf16: the decoder and upsampler stages change accelerate's precision mid-process
    monkeypatch.setattr(train_shapes_world, "native_bf16", lambda: True)
    summary = train_shapes_world.main(["--output_dir", str(tmp_path), "--quick", "--num_images", "40"])
    assert set(summary["timings_seconds"]) >= {"dataset", "clip", "prior", "decoder", "superres", "assemble", "evaluate"}
    assert (tmp_path / "eval" / "report.md").exists() and (tmp_path / "logs" / "decoder.log").exists()
    assert summary["evaluation"]["overall"] is not None
    assert (tmp_path / "pipeline" / "sampling_defaults.json").exists()


def test_auto_precision_picks_bf16_only_for_the_unets_on_native_bf16(monkeypatch):
    args = train_shapes_world.parse_args(["--output_dir", "x"])
    assert args.mixed_precision == "auto"
    monkeypatch.setattr(train_shapes_world, "native_bf16", lambda: True)
    argv = {s: train_shapes_world.stage_argv(args, s, "d", "c") for s in train_shapes_world.STAGES}
    precision = {s: a[a.index("--mixed_precision") + 1] for s, a in argv.items()}
    assert precision == {"clip": "no", "prior": "no", "decoder": "bf16", "superres": "bf16"}
    monkeypatch.setattr(train_shapes_world, "native_bf16", lambda: False)
    assert train_shapes_world.stage_precision(args, "decoder") == "no"
    explicit = train_shapes_world.parse_args(["--output_dir", "x", "--mixed_precision", "fp16"])
    assert {train_shapes_world.stage_precision(explicit, s) for s in train_shapes_world.STAGES} == {"fp16"}
