"""The CLIP text and image encoders that go into the folder: loaded from local folders and checked against Karlo."""

from __future__ import annotations

import os

from ..common import ConversionError


def _load_text_encoder(path: str, clip_dim: int, text_ctx: int | None):
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    if not os.path.isdir(path):
        raise ConversionError(f"--text_encoder_path {path!r} is not a folder (a local CLIP text model + tokenizer).")
    tokenizer = CLIPTokenizer.from_pretrained(path, pad_token="!")
    pad_id = tokenizer.convert_tokens_to_ids("!")
    if pad_id != 0:
        raise ConversionError(
            f"the tokenizer in {path!r} maps the pad token '!' to id {pad_id}; Karlo pads with id 0 ('!' in CLIP's "
            "vocabulary). Use CLIP's own tokenizer."
        )
    text_encoder = CLIPTextModelWithProjection.from_pretrained(path)
    cfg = text_encoder.config
    problems = []
    if cfg.projection_dim != clip_dim:
        problems.append(f"projection_dim={cfg.projection_dim} (the models' clip_dim is {clip_dim})")
    if cfg.hidden_size != clip_dim:
        problems.append(f"hidden_size={cfg.hidden_size} (Karlo projects the text states from clip_dim={clip_dim})")
    if text_ctx is not None and tokenizer.model_max_length != text_ctx:
        problems.append(f"tokenizer model_max_length={tokenizer.model_max_length} (the prior's text_ctx is {text_ctx})")
    if problems:
        raise ConversionError(f"the CLIP text model in {path!r} does not fit the checkpoints: " + "; ".join(problems))
    return text_encoder.eval(), tokenizer


def _load_image_encoder(path: str, clip_dim: int, notes: list[str]):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    if not os.path.isdir(path):
        raise ConversionError(f"--image_encoder_path {path!r} is not a folder (a local CLIP vision model).")
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(path)
    if image_encoder.config.projection_dim != clip_dim:
        raise ConversionError(
            f"the CLIP vision model in {path!r} has projection_dim={image_encoder.config.projection_dim}; the "
            f"decoder's clip_dim is {clip_dim}."
        )
    if os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        feature_extractor = CLIPImageProcessor.from_pretrained(path)
        notes.append("feature_extractor: the image encoder folder's preprocessor_config.json")
    else:
        size = image_encoder.config.image_size
        feature_extractor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        notes.append(f"feature_extractor: CLIP's default preprocessing at {size} px (no preprocessor_config.json)")
    return image_encoder.eval(), feature_extractor
