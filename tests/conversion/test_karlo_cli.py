"""Tests of the whole Karlo conversion: the command line, the folder it writes, and the image-variation variant."""

from __future__ import annotations

import json

import torch

from unclip_pipelines.conversion.karlo import convert_karlo_to_diffusers
from unclip_pipelines.conversion.karlo_cli import main as cli_main

from .karlo_fixtures import DECODER, _assert_same_state, tiny  # noqa: F401, F811 (tiny: a pytest fixture)


# --------------------------------------------------------------------------------------------------------------------
# whole folder


def _cli_args(tiny, dump, *extra):
    f = tiny.files
    return [
        "--prior_checkpoint_path",
        str(f["prior"]),
        "--decoder_checkpoint_path",
        str(f["decoder"]),
        "--super_res_unet_checkpoint_path",
        str(f["sr"]),
        "--clip_stat_path",
        str(f["stats"]),
        "--text_encoder_path",
        tiny.text_encoder,
        "--dump_path",
        str(dump),
        *extra,
    ]


def test_cli_writes_a_karlo_layout_folder_that_loads(tiny, tmp_path, capsys):
    from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    from unclip_pipelines.models import UnCLIPTextProjModel
    from unclip_pipelines.schedulers import UnCLIPScheduler

    dump = tmp_path / "karlo-tiny"
    f = tiny.files
    code = cli_main(
        _cli_args(
            tiny,
            dump,
            "--prior_config",
            str(f["prior_config"]),
            "--decoder_config",
            str(f["decoder_config"]),
            "--sr_config",
            str(f["sr_config"]),
        )
    )
    summary = capsys.readouterr().out
    assert code == 0
    assert "prior attention heads = 4 (from the config's xf_heads)" in summary
    assert "wrote UnCLIPPipeline (10 components" in summary

    index = json.loads((dump / "model_index.json").read_text())
    assert index["_class_name"] == "UnCLIPPipeline"
    assert index["text_proj"][1] == "UnCLIPTextProjModel" and index["prior_scheduler"][1] == "UnCLIPScheduler"
    assert {k for k, v in index.items() if not k.startswith("_") and v[0] is not None} == {
        "prior",
        "decoder",
        "text_encoder",
        "tokenizer",
        "text_proj",
        "super_res_first",
        "super_res_last",
        "prior_scheduler",
        "decoder_scheduler",
        "super_res_scheduler",
    }
    for name in ("prior", "decoder", "text_proj", "super_res_first", "super_res_last"):
        assert (dump / name / "diffusion_pytorch_model.safetensors").is_file(), name
    assert not list(dump.rglob("*.bin"))

    loaded = {
        "prior": PriorTransformer.from_pretrained(dump / "prior"),
        "decoder": UNet2DConditionModel.from_pretrained(dump / "decoder"),
        "text_proj": UnCLIPTextProjModel.from_pretrained(dump / "text_proj"),
        "super_res_first": UNet2DModel.from_pretrained(dump / "super_res_first"),
        "super_res_last": UNet2DModel.from_pretrained(dump / "super_res_last"),
    }
    for name, original in (
        ("prior", tiny.prior),
        ("decoder", tiny.decoder),
        ("text_proj", tiny.text_proj),
        ("super_res_first", tiny.sr_first),
        ("super_res_last", tiny.sr_last),
    ):
        _assert_same_state(loaded[name], original)
    CLIPTextModelWithProjection.from_pretrained(dump / "text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(dump / "tokenizer")
    assert tokenizer.pad_token == "!" and tokenizer.pad_token_id == 0

    schedulers = {
        n: UnCLIPScheduler.from_pretrained(dump / f"{n}_scheduler") for n in ("prior", "decoder", "super_res")
    }
    expected = {
        "prior": ("fixed_small_log", "sample", 5.0),
        "decoder": ("learned_range", "epsilon", 1.0),
        "super_res": ("fixed_small_log", "epsilon", 1.0),
    }
    for name, scheduler in schedulers.items():
        c = scheduler.config
        assert (c.variance_type, c.prediction_type, c.clip_sample_range) == expected[name], name
        assert c.clip_sample and c.num_train_timesteps == 1000 and c.beta_schedule == "squaredcos_cap_v2"

    pipeline_cls = _optional_pipeline("UnCLIPPipeline")
    if pipeline_cls is not None:
        pipe = pipeline_cls.from_pretrained(dump)
        out = pipe(
            "a horse",
            prior_num_inference_steps=2,
            decoder_num_inference_steps=2,
            super_res_num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
        images = out.images
        assert images.shape == (1, 32, 32, 3) and (images >= 0).all() and (images <= 1).all()


def _optional_pipeline(name: str):
    try:
        import unclip_pipelines
    except Exception:  # the pipelines are developed alongside; the folder checks above do not need them
        return None
    return getattr(unclip_pipelines, name, None)


def test_image_variation_variant(tiny, tmp_path, monkeypatch):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    import unclip_pipelines

    pushed = []
    monkeypatch.setattr(
        unclip_pipelines.UnCLIPImageVariationPipeline,
        "push_to_hub",
        lambda self, repo_id, **kwargs: pushed.append((type(self).__name__, repo_id, kwargs.get("private"))),
    )
    dump = tmp_path / "karlo-tiny-variations"
    result = convert_karlo_to_diffusers(
        push_to_hub=True,
        hub_model_id="someone/karlo-tiny-variations",
        private=True,
        dump_path=dump,
        variant="image_variation",
        decoder_checkpoint_path=tiny.files["decoder"],
        super_res_unet_checkpoint_path=tiny.files["sr"],
        text_encoder_path=tiny.text_encoder,
        image_encoder_path=tiny.image_encoder,
        decoder_num_head_channels=DECODER.unet.head_channels,
        decoder_image_size=DECODER.unet.image_size,
    )
    index = json.loads((dump / "model_index.json").read_text())
    assert index["_class_name"] == "UnCLIPImageVariationPipeline"
    assert "prior" not in index and "prior_scheduler" not in index
    assert index["image_encoder"] == ["transformers", "CLIPVisionModelWithProjection"]
    assert index["feature_extractor"][0] == "transformers"
    CLIPVisionModelWithProjection.from_pretrained(dump / "image_encoder")
    assert CLIPImageProcessor.from_pretrained(dump / "feature_extractor").crop_size["height"] == 32
    summary = result.summary()
    assert "--decoder_num_head_channels" in summary and "Karlo v1.0.alpha's settings" in summary
    assert pushed == [("UnCLIPImageVariationPipeline", "someone/karlo-tiny-variations", True)]

    pipeline_cls = _optional_pipeline("UnCLIPImageVariationPipeline")
    if pipeline_cls is not None:
        pipe = pipeline_cls.from_pretrained(dump)
        image = torch.rand(1, 3, 32, 32)
        out = pipe(
            image=image,
            decoder_num_inference_steps=2,
            super_res_num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
        assert out.images.shape == (1, 32, 32, 3)


def test_cli_reports_errors_and_checks_flags(tiny, tmp_path, capsys):
    dump = tmp_path / "out"
    assert cli_main(_cli_args(tiny, dump, "--prior_num_heads", "5")) == 1
    assert "not divisible by 5 attention heads" in capsys.readouterr().err
    assert not dump.exists()  # nothing written when a conversion fails
    assert cli_main(_cli_args(tiny, dump, "--variant", "image_variation")) == 1
    assert "does not use --prior_checkpoint_path" in capsys.readouterr().err
    assert cli_main(_cli_args(tiny, dump, "--push_to_hub")) == 1
    assert "--hub_model_id" in capsys.readouterr().err
    args = _cli_args(tiny, dump)
    index = args.index("--clip_stat_path")
    assert cli_main(args[:index] + args[index + 2 :]) == 1
    assert "needs --clip_stat_path" in capsys.readouterr().err
