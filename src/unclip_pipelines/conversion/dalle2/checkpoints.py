"""Loading DALLE2-pytorch files (trainer checkpoints, tracker model files, state dicts) and picking the weights."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from ..common import ConversionError, load_torch_file

PRIOR = "prior"
DECODER = "decoder"
WEIGHT_CHOICES = ("auto", "ema", "model")


def load_dalle2_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> Mapping:
    """Load a DALLE2-pytorch file (trainer checkpoint, tracker model file or state dict) onto the CPU."""
    loaded = load_torch_file(path, allow_pickle=allow_pickle, what="DALLE2-pytorch checkpoint")
    if not isinstance(loaded, Mapping):
        raise ConversionError(
            f"{os.fspath(path)!r} holds a {type(loaded).__name__}, not a DALLE2-pytorch checkpoint (a dict with "
            "'model' / 'ema' / 'ema_model' entries, or a state dict)."
        )
    return loaded


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _kind_of(state_dict: Mapping) -> str | None:
    if any(k.startswith("net.") for k in state_dict):
        return PRIOR
    if any(k.startswith("unets.") for k in state_dict):
        return DECODER
    return None


def select_state_dict(container: Mapping, weights: str = "auto") -> tuple[dict, str, str]:
    """
    Pick the weights to convert: ``(state_dict, kind, entry)``.

    ``weights='auto'`` takes the EMA weights when the file has them (``ema_model`` of a prior trainer, the ``ema``
    Unets of a decoder trainer), as DALLE2-pytorch's own samplers do; ``'ema'`` requires them; ``'model'`` takes the
    online (trained) weights.
    """
    if weights not in WEIGHT_CHOICES:
        raise ConversionError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}.")
    if _is_state_dict(container) and _kind_of(container):
        if weights == "ema":
            raise ConversionError("The file is a bare state dict: it has no separate EMA weights (use --weights model).")
        return dict(container), _kind_of(container), "state dict"
    entries = sorted(str(k) for k in container)
    model = container.get("model")
    if not _is_state_dict(model) or _kind_of(model) is None:
        raise ConversionError(
            "Not a DALLE2-pytorch checkpoint: no 'model' state dict with 'net.*' (DiffusionPrior) or 'unets.*' "
            f"(Decoder) keys. Entries found: {entries[:15]}."
        )
    kind = _kind_of(model)
    if weights == "model":
        return dict(model), kind, "model"

    if kind == PRIOR:
        if _is_state_dict(container.get("ema_model")):
            return dict(container["ema_model"]), kind, "ema_model"
        ema = container.get("ema")
        if _is_state_dict(ema) and any(k.startswith("ema_model.") for k in ema):
            return {k[len("ema_model.") :]: v for k, v in ema.items() if k.startswith("ema_model.")}, kind, "ema"
    else:
        ema = container.get("ema")
        if _is_state_dict(ema):
            unet_keys = {}
            for key, value in ema.items():
                match = re.match(r"(\d+)\.ema_model\.(.+)", key)
                if match:
                    unet_keys[f"unets.{match.group(1)}.{match.group(2)}"] = value
            if unet_keys:
                merged = {k: v for k, v in model.items() if not k.startswith("unets.")}
                ema_unets = {k.split(".")[1] for k in unet_keys}
                model_unets = {k.split(".")[1] for k in model if k.startswith("unets.")}
                if ema_unets != model_unets:
                    raise ConversionError(
                        f"The decoder's 'ema' entry has EMA copies of unets {sorted(ema_unets)} but the model has "
                        f"unets {sorted(model_unets)}; use --weights model."
                    )
                merged.update(unet_keys)
                return merged, kind, "ema"
    if weights == "ema":
        raise ConversionError(f"The checkpoint has no EMA weights (entries: {entries[:15]}); use --weights model.")
    return dict(model), kind, "model"


def read_version(container: Mapping) -> str | None:
    version = container.get("version") if isinstance(container, Mapping) and not _is_state_dict(container) else None
    return None if version is None else str(version)
