import pytest
import torch
from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel as DeprecatedTextProj

from unclip_pipelines import UnCLIPTextProjModel

CONFIG = dict(clip_extra_context_tokens=4, clip_embeddings_dim=16, time_embed_dim=24, cross_attention_dim=20)


def make_inputs(batch=3, guided=True):
    g = torch.Generator().manual_seed(0)
    rows = 2 * batch if guided else batch
    return dict(
        image_embeddings=torch.randn(batch, 16, generator=g),
        prompt_embeds=torch.randn(rows, 16, generator=g),
        text_encoder_hidden_states=torch.randn(rows, 7, 16, generator=g),
        do_classifier_free_guidance=guided,
    )


@pytest.mark.parametrize("guided", [True, False])
def test_matches_diffusers_deprecated_text_proj(guided):
    torch.manual_seed(0)
    ours = UnCLIPTextProjModel(**CONFIG)
    with torch.no_grad():
        ours.learned_classifier_free_guidance_embeddings.normal_()
    theirs = DeprecatedTextProj(**CONFIG)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # same parameter names and shapes
    inputs = make_inputs(guided=guided)
    for a, b in zip(ours(**inputs), theirs(**inputs)):
        assert torch.equal(a, b)


def test_extra_tokens_are_channel_major_like_karlo():
    model = UnCLIPTextProjModel(**CONFIG)
    image = torch.randn(1, 16)
    context, _ = model(**{**make_inputs(batch=1, guided=False), "image_embeddings": image})
    flat = model.clip_extra_context_tokens_proj(image)[0]  # (20 * 4,)
    # token k, channel c comes from flat[c * 4 + k]
    assert torch.allclose(context[0, 1, 5], flat[5 * 4 + 1])
    assert torch.allclose(context[0, 3, 19], flat[19 * 4 + 3])
    assert context.shape == (1, 4 + 7, 20)


def test_null_embedding_is_used_for_the_unconditional_half():
    model = UnCLIPTextProjModel(**CONFIG)
    inputs = make_inputs(batch=2)
    _, time_a = model(**inputs)
    with torch.no_grad():
        model.learned_classifier_free_guidance_embeddings.add_(1.0)
    _, time_b = model(**inputs)
    assert not torch.allclose(time_a[:2], time_b[:2])  # unconditional rows changed
    assert torch.equal(time_a[2:], time_b[2:])  # conditional rows did not


def test_wrong_embedding_width_raises():
    model = UnCLIPTextProjModel(**CONFIG)
    with pytest.raises(ValueError, match="clip_embeddings_dim"):
        model(**{**make_inputs(batch=1, guided=False), "image_embeddings": torch.randn(1, 8)})


def test_save_and_load_round_trip(tmp_path):
    model = UnCLIPTextProjModel(**CONFIG)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = UnCLIPTextProjModel.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
