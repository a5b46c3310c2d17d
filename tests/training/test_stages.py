"""Each training script runs a few steps on tiny settings and its output loads where the pipelines expect it."""

import json

import numpy as np
import torch
from diffusers import UNet2DModel
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPTokenizer, CLIPVisionModelWithProjection

from training import common, train_decoder, train_superres
from unclip_pipelines import UnCLIPDecoderPipeline, UnCLIPPriorPipeline, UnCLIPScheduler, UnCLIPTextProjModel

from .utils import TINY


def test_clip_output(clip_dir, data_dir):
    parts = common.load_clip(str(clip_dir))
    tokenizer = parts["tokenizer"]
    assert isinstance(tokenizer, CLIPTokenizer) and tokenizer.model_max_length == 16
    ids = tokenizer("a red circle to the left of a blue square").input_ids
    assert len(ids) == 12  # <bos> + one token per word + <eos>
    assert tokenizer.pad_token == "!"
    embeds, hidden, mask = common.encode_text(parts["text_encoder"], tokenizer, ["a red circle", ""])
    assert embeds.shape == (2, 32) and hidden.shape == (2, 16, 32) and mask[0].sum() == 5
    assert isinstance(parts["image_encoder"], CLIPVisionModelWithProjection)
    # --position_embedding_std 1.0 (tests/training/utils.py) instead of transformers' 0.02
    assert parts["image_encoder"].vision_model.embeddings.position_embedding.weight.std() > 0.5
    # the training-time preprocessing is the feature extractor's, bit for bit
    images = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in sorted((data_dir / "images").glob("*.png"))[:4]]))
    images = images.permute(0, 3, 1, 2)
    extractor = parts["feature_extractor"]
    expected = extractor(images=list(images.permute(0, 2, 3, 1).numpy()), return_tensors="pt").pixel_values
    ours = common.normalize_pixels(extractor, common.clip_pixels(extractor, images))
    torch.testing.assert_close(ours, expected)
    assert expected.shape[-1] == 32 and max(extractor.image_mean) < 1
    summary = json.loads((clip_dir / "train_summary.json").read_text())
    assert summary["steps"] == 2 and "val/image_to_caption_accuracy" in summary
    assert 0 <= summary["val/hard_negative_accuracy"] <= 1
    assert (clip_dir / "README.md").exists()


def test_prior_output(prior_dir, data_dir):
    pipe = UnCLIPPriorPipeline.from_pretrained(prior_dir)
    assert pipe.prior_scheduler.config.prediction_type == "sample"
    assert pipe.prior_scheduler.config.variance_type == "fixed_small_log"
    assert pipe.prior.config.num_embeddings == pipe.tokenizer.model_max_length
    (cache,) = (data_dir / ".unclip_cache").glob("clip_embeddings-*.safetensors")
    train = load_file(cache)["image_embeds"][:-3]  # 32 examples, 3 held out (10 %)
    torch.testing.assert_close(pipe.prior.clip_mean, train.mean(0, keepdim=True))
    torch.testing.assert_close(pipe.prior.clip_std, train.std(0, keepdim=True))
    pipe.set_progress_bar_config(disable=True)
    embeds = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).image_embeds
    assert embeds.shape == (1, 32) and torch.isfinite(embeds).all()


def test_decoder_output(decoder_dir, clip_dir):
    pipe = UnCLIPDecoderPipeline.from_pretrained(decoder_dir)
    assert pipe.decoder.config.out_channels == 3 and pipe.decoder.config.sample_size == 32
    scheduler = pipe.decoder_scheduler.config
    assert (scheduler.variance_type, scheduler.prediction_type, scheduler.clip_sample_range) == (
        "fixed_small_log", "v_prediction", 1.0)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(torch.randn(1, 32), prompt="a red circle", decoder_num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 32, 32, 3)
    assert list((decoder_dir / "validation").glob("decoder-*.png"))
    assert pipe.text_proj.clip_extra_context_tokens == 4

def test_superres_output(superres_dir):
    unet = UNet2DModel.from_pretrained(superres_dir, subfolder="super_res_first")
    assert unet.config.sample_size == 128 and unet.config.in_channels == 6
    last = UNet2DModel.from_pretrained(superres_dir, subfolder="super_res_last")
    torch.testing.assert_close(dict(last.named_parameters())["conv_in.weight"], unet.conv_in.weight)
    scheduler = UnCLIPScheduler.from_pretrained(superres_dir, subfolder="super_res_scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    summary = json.loads((superres_dir / "train_summary.json").read_text())
    assert summary["val/psnr_bicubic"] > 20


def test_decoder_condition_drops_train_the_null_embedding():
    args = train_decoder.parse_args(["--train_data_dir", "d", "--output_dir", "o", "--pretrained_model_name_or_path", "c"]
                                    + TINY["decoder"].split())
    text_proj = UnCLIPTextProjModel(clip_embeddings_dim=32, time_embed_dim=64, cross_attention_dim=32)
    model = train_decoder.DecoderTrainer(train_decoder.build_decoder(args), text_proj, train_decoder.decoder_scheduler(args))
    n = 2
    loss = model(
        images=torch.rand(n, 3, 32, 32) * 2 - 1, noise=torch.randn(n, 3, 32, 32), timesteps=torch.tensor([10, 900]),
        image_embeds=torch.randn(n, 32), drop_image=torch.tensor([True, False]), text_embeds=torch.randn(n, 32),
        hidden_states=torch.randn(n, 16, 32), mask=torch.ones(n, 16, dtype=torch.bool),
    )
    loss.backward()
    assert text_proj.learned_classifier_free_guidance_embeddings.grad.abs().sum() > 0


def test_gaussian_blur():
    images = torch.rand(2, 3, 16, 16)
    blurred = train_superres.gaussian_blur(images, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(blurred[0], images[0])
    assert blurred[1].std() < images[1].std()
    torch.testing.assert_close(blurred[1].mean(), images[1].mean(), atol=0.02, rtol=0)


def test_upscale_is_the_pipelines():
    from unclip_pipelines.pipelines import stages

    pipeline_upscale = getattr(stages, "upscale", None) or stages._upscale
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    for size in ((128, 128), (8, 8)):
        torch.testing.assert_close(common.upscale(images, size), pipeline_upscale(images, size), rtol=0, atol=0)


def test_data_loaders_agree(data_dir):
    parser = common.build_parser("test")
    direct = common.ImageTextData(common.parse_args(parser, ["--train_data_dir", str(data_dir), "--output_dir", "o"]))
    via_datasets = common.ImageTextData(common.parse_args(parser, ["--dataset_name", str(data_dir), "--output_dir", "o"]))
    assert direct.captions == via_datasets.captions and len(direct) == 32 and direct.num_train == 29
    assert torch.equal(direct.images, via_datasets.images) and direct.images.shape == (32, 3, 128, 128)
