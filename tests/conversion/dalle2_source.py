"""
Imports lucidrains' DALLE2-pytorch (the real package, a test extra) on a CPU-only torch, and builds tiny source
models for the parity tests.

``dalle2_pytorch`` imports torchvision at module level (only its CLIP adapters and data loaders use it). PyPI's
torchvision is a CUDA build that cannot import beside torch+cpu (``operator torchvision::nms does not exist``), so:

* when torchvision is installed, the ``torchvision::nms`` / ``qnms`` operator schemas are defined first, which lets
  it import (its C++ ops stay unavailable, which nothing here needs);
* when it is not (the recommended test setup: ``pip install --no-deps dalle2-pytorch`` plus its pure-Python
  dependencies), stand-in ``torchvision`` modules are registered for the duration of the import and removed again,
  so that nothing else in the test session sees them.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types

import torch

_STUBS = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.utils",
          "torchvision.models", "torchvision.datasets", "torchvision.io", "torchvision.ops")


class _Placeholder:
    """Stands in for any torchvision object; fails loudly if it is ever used."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is not installed; this DALLE2-pytorch feature needs it")


def _stub_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder

    module.__getattr__ = __getattr__
    return module


_NMS_FIX_DONE = False


def define_torchvision_op_schemas() -> None:
    """Let a CUDA build of torchvision import beside torch+cpu (must run before torchvision is imported)."""
    global _NMS_FIX_DONE
    if _NMS_FIX_DONE or "torchvision" in sys.modules:
        return
    library = torch.library.Library("torchvision", "DEF")
    for schema in (
        "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    ):
        try:
            library.define(schema)
        except RuntimeError:  # already defined (a CPU torchvision, or a second call)
            pass
    sys.modules.setdefault("_unclip_torchvision_schema_library", library)  # keep the registration alive
    _NMS_FIX_DONE = True


def import_dalle2_pytorch():
    """Import and return the ``dalle2_pytorch`` module, or raise ImportError if it is not installed."""
    if "dalle2_pytorch" in sys.modules:
        return sys.modules["dalle2_pytorch"]
    if importlib.util.find_spec("dalle2_pytorch") is None:
        raise ImportError("dalle2_pytorch is not installed (pip install --no-deps dalle2-pytorch, see docs)")
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        define_torchvision_op_schemas()
        return importlib.import_module("dalle2_pytorch")
    added = []
    for name in _STUBS:
        if name not in sys.modules:
            sys.modules[name] = _stub_module(name)
            added.append(name)
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    try:
        return importlib.import_module("dalle2_pytorch")
    finally:
        for name in added:
            sys.modules.pop(name, None)


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Overwrite every parameter with noise (fan-in scaled for matrices and kernels), so that zero-initialised layers
    (``to_out``), unit gains and zero biases cannot hide mapping mistakes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() >= 2 and not name.endswith(("null_kv", "freqs")) and "null_" not in name:
                noise = noise / (param[0].numel() ** 0.5)
            else:
                noise = noise * scale
            if name.endswith((".g", ".gamma")) or (".norm" in name and name.endswith("weight")):
                noise = noise + 1.0
            param.copy_(noise)
    return module


# --------------------------------------------------------------------------------------------------------------------
# tiny source models with reference outputs, in whatever DALLE2-pytorch is importable (also run in a subprocess with
# an older release on sys.path, see test_dalle2_pytorch_releases.py)


def _version_tuple(module) -> tuple[int, ...]:
    return tuple(int(p) for p in str(module.__version__).split(".")[:3])


def prior_inputs(batch: int = 3, dim: int = 32, text_len: int = 6, seed: int = 1, zero_padding: bool = True):
    """Inputs of a prior forward pass. Releases up to 0.22 took the padding mask as an argument (and their "stable"
    layer norms turn all-zero padding tokens into NaN), so their padding is left random (``zero_padding=False``)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, text_len, dtype=torch.bool)
    for row in range(batch):
        mask[row, : max(1, text_len - 2 * row)] = True
    encodings = torch.randn(batch, text_len, dim, generator=generator)
    if zero_padding:
        encodings = encodings * mask[..., None]
    return {
        "image_embed": torch.randn(batch, dim, generator=generator),
        "timesteps": torch.tensor([3, 10, 49][:batch]),
        "text_embed": torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=-1),
        "text_encodings": encodings,
        "mask": mask,
        "self_cond": torch.randn(batch, dim, generator=generator),
    }


def build_source_prior(
    d2, *, seed: int = 0, timesteps: int = 50, beta_schedule: str = "cosine", prior_kwargs: dict | None = None,
    **net_kwargs,
):
    """A tiny randomised ``DiffusionPrior`` of the imported release (``prior_kwargs``: more ``DiffusionPrior``
    arguments, e.g. ``predict_v``)."""
    torch.manual_seed(seed)
    kwargs = {"dim": 32, "depth": 2, "dim_head": 16, "heads": 4, "num_timesteps": timesteps, **net_kwargs}
    if _version_tuple(d2) < (0, 23, 0):
        kwargs.pop("max_text_len", None)
    else:
        kwargs.setdefault("max_text_len", 8)
    net = d2.DiffusionPriorNetwork(**kwargs)
    prior = d2.DiffusionPrior(
        net=net, image_embed_dim=32, timesteps=timesteps, cond_drop_prob=0.2, beta_schedule=beta_schedule,
        **(prior_kwargs or {}),
    )
    randomize_(prior.net, seed=seed)
    return prior.eval()


def source_prior_outputs(d2, prior, inputs) -> dict:
    """The network's conditional (and, where the release has it, null-branch) predictions."""
    version = _version_tuple(d2)
    net = prior.net
    kwargs = {"text_embed": inputs["text_embed"], "text_encodings": inputs["text_encodings"]}
    if version < (0, 23, 0):
        kwargs["mask"] = inputs["mask"].clone()  # the network masks it in place
    if getattr(net, "self_cond", False):
        kwargs["self_cond"] = inputs["self_cond"]
    out = {}
    with torch.no_grad():
        out["cond"] = net(inputs["image_embed"], inputs["timesteps"], **kwargs)
        if version < (1, 9, 0):
            if version < (0, 23, 0):
                kwargs["mask"] = inputs["mask"].clone()
            out["null"] = net(inputs["image_embed"], inputs["timesteps"], cond_drop_prob=1.0, **kwargs)
        else:
            out["null"] = net(
                inputs["image_embed"], inputs["timesteps"], text_cond_drop_prob=1.0, image_cond_drop_prob=1.0, **kwargs
            )
    return out


def export_prior(path: str, **net_kwargs) -> None:
    """Subprocess entry point: build a prior with the DALLE2-pytorch on sys.path and save it with its outputs."""
    d2 = import_dalle2_pytorch()
    prior = build_source_prior(d2, **net_kwargs)
    inputs = prior_inputs(zero_padding=_version_tuple(d2) >= (0, 23, 0))
    outputs = source_prior_outputs(d2, prior, inputs)
    torch.save(
        {"version": str(d2.__version__), "model": prior.state_dict(), "inputs": inputs, "outputs": outputs}, path
    )


UNET_1 = {"dim": 16, "dim_mults": (1, 2), "image_embed_dim": 32, "cond_dim": 24, "cond_on_text_encodings": True,
          "text_embed_dim": 20, "attn_heads": 2, "attn_dim_head": 8, "max_text_len": 8, "num_resnet_blocks": 1,
          "self_attn": (False, True)}
UNET_2 = {"dim": 8, "dim_mults": (1, 2), "cond_on_text_encodings": False, "attn_heads": 2, "attn_dim_head": 8,
          "num_resnet_blocks": (1, 2), "sparse_attn": True, "memory_efficient": True, "resnet_groups": 4}


def build_source_decoder(d2, *, seed: int = 0, unets=(UNET_1,), image_sizes=(16,), timesteps: int = 50, **decoder_kwargs):
    """A tiny randomised ``Decoder`` (one ``Unet`` per image size) of the imported release."""
    torch.manual_seed(seed)
    built = []
    for kwargs in unets:
        built.append(d2.Unet(**kwargs))
    decoder = d2.Decoder(
        unet=tuple(built), image_sizes=tuple(image_sizes), timesteps=timesteps, **decoder_kwargs
    )
    randomize_(decoder.unets, seed=seed)
    return decoder.eval()


def decoder_inputs(decoder, batch: int = 2, seed: int = 2, zero_padding: bool = True) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for unet, size in zip(decoder.unets, decoder.image_sizes):
        channels = unet.channels
        item = {
            "x": torch.randn(batch, channels, size, size, generator=generator),
            "t": torch.tensor([7, 31][:batch]),
            "image_embed": torch.nn.functional.normalize(torch.randn(batch, 32, generator=generator), dim=-1),
        }
        if unet.lowres_cond:
            item["lowres_cond_img"] = torch.randn(batch, channels, size, size, generator=generator)
        if unet.cond_on_text_encodings:
            mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:batch]
            enc = torch.randn(batch, 5, unet.text_to_cond.in_features, generator=generator)
            item["text_encodings"] = enc * mask[..., None] if zero_padding else enc
            item["mask"] = mask
        inputs.append(item)
    return inputs


def source_decoder_outputs(d2, decoder, inputs) -> list[dict]:
    old = _version_tuple(d2) < (1, 0, 0)
    outputs = []
    with torch.no_grad():
        for unet, item in zip(decoder.unets, inputs):
            kwargs = {"image_embed": item["image_embed"]}
            if "lowres_cond_img" in item:
                kwargs["lowres_cond_img"] = item["lowres_cond_img"]
            if "text_encodings" in item:
                kwargs["text_encodings"] = item["text_encodings"]
                if old:
                    kwargs["text_mask"] = item["mask"]
            cond = unet(item["x"], item["t"], **kwargs)
            null = unet(item["x"], item["t"], image_cond_drop_prob=1.0, text_cond_drop_prob=1.0, **kwargs)
            outputs.append({"cond": cond, "null": null})
    return outputs


def export_decoder(path: str, **kwargs) -> None:
    """Subprocess entry point, as :func:`export_prior` for a decoder."""
    d2 = import_dalle2_pytorch()
    decoder = build_source_decoder(d2, **kwargs)
    inputs = decoder_inputs(decoder)
    outputs = source_decoder_outputs(d2, decoder, inputs)
    torch.save(
        {"version": str(d2.__version__), "model": decoder.state_dict(), "inputs": inputs, "outputs": outputs}, path
    )


if __name__ == "__main__":  # python dalle2_source.py export_prior OUT.pt '{"normformer": true}'
    import json

    command, out_path = sys.argv[1], sys.argv[2]
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    globals()[command](out_path, **extra)
