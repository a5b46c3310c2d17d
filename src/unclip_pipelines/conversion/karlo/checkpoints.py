"""Loading Karlo's files: the PyTorch-Lightning checkpoints and the CLIP image-embedding statistics."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..common import ConversionError, load_torch_file


def load_karlo_state_dict(path: str | os.PathLike, *, allow_pickle: bool = False, what: str = "checkpoint"):
    """Load a Karlo checkpoint and return its ``state_dict`` (a bare ``{key: tensor}`` file is accepted too)."""
    loaded = load_torch_file(path, allow_pickle=allow_pickle, what=what)
    if isinstance(loaded, Mapping) and "state_dict" in loaded:
        state_dict = loaded["state_dict"]
    elif isinstance(loaded, Mapping) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        state_dict = loaded
    else:
        found = sorted(map(str, loaded.keys()))[:10] if isinstance(loaded, Mapping) else type(loaded).__name__
        raise ConversionError(
            f"The {what} {os.fspath(path)!r} has no 'state_dict' entry (found: {found}). Karlo checkpoints are "
            "PyTorch-Lightning files whose weights sit under ['state_dict']."
        )
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"The {what} {os.fspath(path)!r} has a 'state_dict' that is not a mapping.")
    return dict(state_dict)


def load_clip_stats(path: str | os.PathLike, *, allow_pickle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load Karlo's ``ViT-L-14_stats.th``: a ``(mean, std)`` pair of 1-D tensors of CLIP image embeddings."""
    loaded = load_torch_file(path, allow_pickle=allow_pickle, what="CLIP stats file")
    if (
        not isinstance(loaded, (tuple, list))
        or len(loaded) != 2
        or not all(isinstance(t, torch.Tensor) for t in loaded)
    ):
        raise ConversionError(
            f"The CLIP stats file {os.fspath(path)!r} must hold a (mean, std) pair of tensors, as Karlo's "
            f"ViT-L-14_stats.th does; it holds {type(loaded).__name__}."
        )
    # (D,) as in Karlo's file; (1, D) is accepted too
    mean, std = (t.detach().to(torch.float32).squeeze(0) if t.dim() == 2 else t.detach() for t in loaded)
    if mean.dim() != 1 or std.shape != mean.shape:
        raise ConversionError(
            f"The CLIP stats must be two 1-D tensors of the same size; got shapes {tuple(loaded[0].shape)} and "
            f"{tuple(loaded[1].shape)}."
        )
    if not bool((std > 0).all()):
        raise ConversionError("The CLIP stats' std has entries that are not positive.")
    return mean.to(torch.float32), std.to(torch.float32)
