"""The paper's "importance of the prior" modes (§5.1): what the decoder gets as image embedding."""

import pytest
import torch

from tests.helpers import FEW_STEPS, seeded


def test_text_embedding_mode_passes_the_clip_text_embedding(pipe):
    out = pipe(["horse", "red circle"], conditioning="text_embedding", output_type="np", **FEW_STEPS)
    tokens = pipe.tokenizer(["horse", "red circle"], padding="max_length", return_tensors="pt")
    assert torch.allclose(out.image_embeds, pipe.text_encoder(tokens.input_ids).text_embeds, atol=1e-5)


def test_caption_only_mode_uses_the_learned_null_embedding(pipe):
    with torch.no_grad():
        pipe.text_proj.learned_classifier_free_guidance_embeddings.normal_(generator=seeded(0))
    out = pipe("horse", num_images_per_prompt=2, conditioning="caption_only", output_type="np", **FEW_STEPS)
    null = pipe.text_proj.learned_classifier_free_guidance_embeddings
    assert torch.equal(out.image_embeds, null.expand(2, -1))


def test_prior_mode_is_the_default_and_modes_differ(pipe):
    kwargs = dict(generator=seeded(0), output_type="np", **FEW_STEPS)
    default = pipe("horse", **kwargs)
    prior = pipe("horse", conditioning="prior", **{**kwargs, "generator": seeded(0)})
    text = pipe("horse", conditioning="text_embedding", **{**kwargs, "generator": seeded(0)})
    assert torch.equal(default.image_embeds, prior.image_embeds)
    assert not torch.allclose(prior.image_embeds, text.image_embeds)


def test_unknown_mode_raises(pipe):
    with pytest.raises(ValueError, match="conditioning"):
        pipe("horse", conditioning="image", **FEW_STEPS)
