"""Loading Karlo-layout folders unchanged, save/load round trips, the Hub cache offline, model cards."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from tests.helpers import FEW_STEPS, fixed_latents, seeded, write_karlo_folder
from unclip_pipelines import (
    UnCLIPDecoderPipeline,
    UnCLIPImageVariationPipeline,
    UnCLIPPipeline,
    UnCLIPPriorPipeline,
    UnCLIPScheduler,
    UnCLIPTextProjModel,
)


def generate(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe("horse", generator=seeded(0), output_type="np", **FEW_STEPS, **fixed_latents(), **kwargs).images


def assert_close_images(a, b):
    # Two instances of identical weights differ by ~1e-7..1e-6 per forward pass (memory layout), and the random
    # tiny networks amplify that to ~1e-2 at a few saturated pixels; the weights themselves are compared exactly
    # by `assert_same_weights`, so here only gross differences (wrong component, wrong config) must show.
    assert np.abs(a - b).mean() <= 1e-4
    assert np.abs(a - b).max() <= 5e-2


def assert_same_weights(a, b):
    for name in ("prior", "decoder", "text_proj", "super_res_first", "super_res_last", "text_encoder"):
        for (key, x), (_, y) in zip(getattr(a, name).state_dict().items(), getattr(b, name).state_dict().items()):
            assert torch.equal(x, y), f"{name}.{key}"


def test_karlo_layout_folder_loads_unchanged(pipe, tiny_components, tmp_path):
    write_karlo_folder(tiny_components, tmp_path)
    index = json.load(open(tmp_path / "model_index.json"))
    assert index["text_proj"] == ["unclip", "UnCLIPTextProjModel"]
    assert index["decoder_scheduler"] == ["diffusers", "UnCLIPScheduler"]

    loaded = UnCLIPPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.text_proj, UnCLIPTextProjModel)
    for name in ("prior_scheduler", "decoder_scheduler", "super_res_scheduler"):
        assert type(getattr(loaded, name)) is UnCLIPScheduler, name
    assert loaded.decoder_scheduler.config.variance_type == "learned_range"
    assert loaded.prior_scheduler.config.clip_sample_range == 5.0
    assert loaded.tokenizer("a red horse").input_ids == pipe.tokenizer("a red horse").input_ids
    assert_same_weights(pipe, loaded)
    assert_close_images(generate(loaded), generate(pipe))


def test_karlo_image_variation_folder_loads_unchanged(variation_pipe, tiny_variation_components, tmp_path):
    write_karlo_folder(tiny_variation_components, tmp_path, class_name="UnCLIPImageVariationPipeline")
    loaded = UnCLIPImageVariationPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    embeds = torch.randn(1, 32, generator=seeded(5))
    latents = fixed_latents()
    kwargs = dict(
        image_embeddings=embeds,
        decoder_num_inference_steps=3,
        super_res_num_inference_steps=2,
        decoder_latents=latents["decoder_latents"],
        super_res_latents=latents["super_res_latents"],
        output_type="np",
    )
    assert_close_images(loaded(generator=seeded(0), **kwargs).images, variation_pipe(generator=seeded(0), **kwargs).images)


def test_save_pretrained_round_trips(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.load(open(tmp_path / "model_index.json"))
    assert index["text_proj"] == ["unclip", "UnCLIPTextProjModel"]  # Karlo's name, not a private module path
    assert (tmp_path / "decoder" / "diffusion_pytorch_model.safetensors").exists()
    assert (tmp_path / "README.md").exists()
    loaded = UnCLIPPipeline.from_pretrained(tmp_path)
    assert_same_weights(pipe, loaded)
    assert_close_images(generate(loaded), generate(pipe))
    # and a second generation of round trip
    loaded.save_pretrained(tmp_path / "again")
    again = json.load(open(tmp_path / "again" / "model_index.json"))
    again.pop("_name_or_path")
    assert again == index


def test_stage_pipelines_load_from_a_full_folder(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    prior = UnCLIPPriorPipeline.from_pretrained(tmp_path)
    decoder = UnCLIPDecoderPipeline.from_pretrained(tmp_path)
    assert set(prior.components) == {"prior", "text_encoder", "tokenizer", "prior_scheduler"}
    assert decoder.super_res_first is not None and decoder.super_res_2_first is None


def test_loads_from_the_hub_cache_offline(pipe, tmp_path, monkeypatch):
    snapshot = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--unclip-test--tiny-unclip"
    pipe.save_pretrained(repo / "snapshots" / snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = UnCLIPPipeline.from_pretrained("unclip-test/tiny-unclip", cache_dir=tmp_path / "cache")
    assert_same_weights(pipe, loaded)


def test_missing_component_folder_is_named(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "decoder")
    with pytest.raises(ValueError, match=r"`decoder/` is missing"):
        UnCLIPPipeline.from_pretrained(tmp_path)
    index = json.load(open(tmp_path / "model_index.json"))
    del index["prior"]
    json.dump(index, open(tmp_path / "model_index.json", "w"))
    with pytest.raises(ValueError, match=r"`prior` is not listed"):
        UnCLIPPipeline.from_pretrained(tmp_path)
    # a component passed by hand needs no folder
    loaded = UnCLIPPipeline.from_pretrained(tmp_path, decoder=pipe.decoder, prior=pipe.prior)
    assert loaded.decoder is pipe.decoder


def test_not_a_pipeline_folder(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        UnCLIPPipeline.from_pretrained(tmp_path)


def test_push_to_hub_writes_a_model_card(pipe, monkeypatch, tmp_path):
    uploaded = {}

    class Repo:
        repo_id = "someone/tiny-unclip"

    def fake_upload(self, folder, repo_id, **kwargs):
        uploaded["files"] = sorted(os.listdir(folder))
        uploaded["card"] = open(os.path.join(folder, "README.md")).read()
        uploaded["repo_id"] = repo_id

    monkeypatch.setattr("unclip_pipelines.pipelines.base.create_repo", lambda repo_id, **kw: Repo())
    monkeypatch.setattr(UnCLIPPipeline, "_upload_folder", fake_upload)
    pipe.push_to_hub("tiny-unclip", description="A test model.")
    assert uploaded["repo_id"] == "someone/tiny-unclip"
    assert {"model_index.json", "README.md", "decoder", "text_proj"} <= set(uploaded["files"])
    card = uploaded["card"]
    assert "library_name: diffusers" in card and "unclip" in card
    assert 'from_pretrained("someone/tiny-unclip")' in card and "A test model." in card
    assert "`text_proj` | `unclip.UnCLIPTextProjModel`" in card


def test_sampling_defaults_travel_with_the_folder(pipe, tmp_path):
    from unclip_pipelines.cli import _generate_kwargs, build_parser

    pipe.save_pretrained(tmp_path / "plain")
    assert UnCLIPPipeline.from_pretrained(tmp_path / "plain").sampling_defaults == {}
    (tmp_path / "plain" / "sampling_defaults.json").write_text('{"decoder_num_inference_steps": 5, "decoder_guidance_scale": 3.0}')
    loaded = UnCLIPPipeline.from_pretrained(tmp_path / "plain")
    assert loaded.sampling_defaults == {"decoder_num_inference_steps": 5, "decoder_guidance_scale": 3.0}
    loaded.save_pretrained(tmp_path / "again")
    assert UnCLIPPipeline.from_pretrained(tmp_path / "again").sampling_defaults == loaded.sampling_defaults
    # the CLI applies them, and its flags win
    args = build_parser().parse_args(["generate", "x", "--decoder-steps", "9"])
    kwargs = _generate_kwargs(args, loaded)
    assert kwargs["decoder_num_inference_steps"] == 9 and kwargs["decoder_guidance_scale"] == 3.0
