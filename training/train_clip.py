"""
Train a small CLIP contrastively on an image–caption dataset: the frozen CLIP that unCLIP's prior and decoder are
built on (paper §2: CLIP is trained first, then frozen).

    accelerate launch training/train_clip.py --train_data_dir data/shapes --output_dir runs/clip --max_train_minutes 8

Saves pipeline-style subfolders ``text_encoder`` (CLIPTextModelWithProjection), ``tokenizer`` (a real CLIPTokenizer
over the dataset's words), ``image_encoder`` (CLIPVisionModelWithProjection) and ``feature_extractor``
(CLIPImageProcessor at the model's input size, with the dataset's mean and std). Captions repeat in a small world, so
the loss counts every pair with the same caption as a positive (a multi-positive InfoNCE).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on a shared CPU

import re
import sys

import torch
import torch.nn.functional as F
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import common
from unclip_pipelines.tokenization import build_clip_tokenizer


def parse_args(argv=None):
    parser = common.build_parser(
        __doc__.split("\n\n")[0], train_batch_size=256, learning_rate=5e-4, max_train_steps=2000, validation_steps=250
    )
    model = parser.add_argument_group("model")
    model.add_argument("--image_size", type=int, default=64)
    model.add_argument("--patch_size", type=int, default=8)
    model.add_argument(
        "--hidden_size", type=int, default=128,
        help="width of both towers and of the projection (unCLIP needs text width == embedding width)",
    )
    model.add_argument("--num_hidden_layers", type=int, default=4)
    model.add_argument("--num_attention_heads", type=int, default=4)
    model.add_argument("--max_length", type=int, default=24, help="the tokenizer's model_max_length")
    model.add_argument("--extra_words", nargs="*", default=[], help="more single-token words for the tokenizer")
    return common.parse_args(parser, argv)


def words_of(captions) -> set[str]:
    return {word for caption in captions for word in re.findall(r"[a-z]+", caption.lower())}


class ContrastiveCLIP(torch.nn.Module):
    """CLIPModel + its input normalisation; ``forward`` returns the symmetric multi-positive contrastive loss."""

    def __init__(self, clip: CLIPModel, feature_extractor: CLIPImageProcessor):
        super().__init__()
        self.clip = clip
        self.feature_extractor = feature_extractor

    def embed_text(self, input_ids):
        return F.normalize(self.clip.text_projection(self.clip.text_model(input_ids=input_ids).pooler_output), dim=-1)

    def embed_images(self, pixels):
        pixel_values = common.normalize_pixels(self.feature_extractor, pixels)
        return F.normalize(self.clip.visual_projection(self.clip.vision_model(pixel_values).pooler_output), dim=-1)

    def forward(self, input_ids, pixels, caption_ids):
        logits = self.clip.logit_scale.exp().clamp(max=100) * self.embed_text(input_ids) @ self.embed_images(pixels).T
        same = (caption_ids[:, None] == caption_ids[None, :]).float()
        targets = same / same.sum(1, keepdim=True)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def build(args, data: common.ImageTextData):
    tokenizer = build_clip_tokenizer(sorted(words_of(data.captions) | set(args.extra_words)), args.max_length)
    longest = max(len(ids) for ids in tokenizer(data.captions[:5000]).input_ids)
    if longest > args.max_length:
        print(f"warning: captions of up to {longest} tokens are truncated to --max_length {args.max_length}")
    size = {"shortest_edge": args.image_size}
    probe = CLIPImageProcessor(size=size, crop_size=args.image_size)
    pixels = common.clip_pixels(probe, data.images)
    data.release_images()
    sample = pixels[: 4096].float() / 255
    feature_extractor = CLIPImageProcessor(
        size=size, crop_size={"height": args.image_size, "width": args.image_size},
        image_mean=[round(v, 4) for v in sample.mean((0, 2, 3)).tolist()],
        image_std=[round(v, 4) for v in sample.std((0, 2, 3)).clamp(min=1e-3).tolist()],
    )
    width, heads, layers = args.hidden_size, args.num_attention_heads, args.num_hidden_layers
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width, projection_dim=width,
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=args.max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=width, intermediate_size=4 * width, projection_dim=width, num_hidden_layers=layers,
        num_attention_heads=heads, image_size=args.image_size, patch_size=args.patch_size,
    )
    config = CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=width)
    return tokenizer, feature_extractor, pixels, ContrastiveCLIP(CLIPModel(config), feature_extractor)


def split_towers(clip: CLIPModel) -> tuple[CLIPTextModelWithProjection, CLIPVisionModelWithProjection]:
    """The two towers of a CLIPModel as the WithProjection models the unCLIP pipelines load."""
    state = clip.state_dict()
    towers = []
    for cls, config, prefixes in (
        (CLIPTextModelWithProjection, clip.config.text_config, ("text_model.", "text_projection.")),
        (CLIPVisionModelWithProjection, clip.config.vision_config, ("vision_model.", "visual_projection.")),
    ):
        tower = cls(config)
        tower.load_state_dict({k: v for k, v in state.items() if k.startswith(prefixes)}, strict=True)
        towers.append(tower.eval())
    return towers[0], towers[1]


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = common.make_accelerator(args)
    data = common.ImageTextData(args)
    tokenizer, feature_extractor, pixels, model = build(args, data)
    input_ids, _ = common.tokenize(tokenizer, data.captions)
    position = {c: i for i, c in enumerate(sorted(set(data.captions)))}
    caption_ids = torch.tensor([position[c] for c in data.captions])
    accelerator.print(f"CLIP: {common.count_parameters(model)} parameters, vocabulary of {len(tokenizer)} tokens")

    def make_batch(indices, generator):
        return {"input_ids": input_ids[indices], "pixels": pixels[indices], "caption_ids": caption_ids[indices]}

    val = data.validation_indices

    def validate(model: ContrastiveCLIP, folder, step):
        device = next(model.parameters()).device
        captions = [data.captions[i] for i in val.tolist()]
        unique = sorted(set(captions))
        text = model.embed_text(common.tokenize(tokenizer, unique)[0].to(device))
        images = model.embed_images(pixels[val].to(device))
        own = torch.tensor([unique.index(c) for c in captions], device=device)
        similarity = images @ text.T  # (images, unique captions)
        best_image = similarity.argmax(0)  # for each caption, its best image
        return {
            "image_to_caption_accuracy": (similarity.argmax(1) == own).float().mean().item(),
            "caption_to_image_accuracy": (own[best_image] == torch.arange(len(unique), device=device)).float().mean().item(),
            "logit_scale": model.clip.logit_scale.exp().item(),
        }

    def save(model: ContrastiveCLIP, folder):
        text_encoder, image_encoder = split_towers(model.clip)
        text_encoder.save_pretrained(os.path.join(folder, "text_encoder"))
        image_encoder.save_pretrained(os.path.join(folder, "image_encoder"))
        tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
        feature_extractor.save_pretrained(os.path.join(folder, "feature_extractor"))

    stage = common.Stage(
        model=model, make_batch=make_batch, num_examples=data.num_train, save=save,
        validate=validate if len(val) else None,
        description=f"A small CLIP ({args.image_size} px, width {args.hidden_size}) trained contrastively.",
    )
    return common.train(args, stage, accelerator)


if __name__ == "__main__":
    main()
