"""Helpers shared by the checkpoint converters: safe loading, strict key/shape bookkeeping, clear errors."""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

__all__ = [
    "ConversionError",
    "Rule",
    "apply_rules",
    "check_key_sets",
    "format_keys",
    "load_into_model",
    "load_torch_file",
]


class ConversionError(ValueError):
    """A checkpoint could not be converted faithfully. The message says which keys or values are at fault."""


def format_keys(keys: Iterable[str], limit: int = 25) -> str:
    """Sorted, one per line, cut after ``limit`` entries."""
    keys = sorted(keys)
    shown = "\n".join(f"    {key}" for key in keys[:limit])
    if len(keys) > limit:
        shown += f"\n    ... and {len(keys) - limit} more"
    return shown


def load_torch_file(path: str | os.PathLike, *, allow_pickle: bool = False, what: str = "checkpoint"):
    """
    ``torch.load`` a file onto the CPU.

    By default only tensors and plain containers are unpickled (``weights_only=True``), so a file cannot run code
    while it is read. ``allow_pickle=True`` unpickles arbitrary objects (e.g. Lightning hyper-parameters stored as
    custom classes); only do that for files from a source you trust.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConversionError(f"The {what} file {path!r} does not exist.")
    if allow_pickle:
        warnings.warn(
            f"Loading the {what} {path!r} with full unpickling (--allow-pickle): a malicious file can run arbitrary "
            "code while it is read. Only do this for files from a source you trust.",
            UserWarning,
            stacklevel=2,
        )
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"The {what} {path!r} holds Python objects other than tensors and plain containers, so it was not "
            "loaded (safe loading, torch.load(weights_only=True)). If you trust where the file comes from, pass "
            f"--allow-pickle (allow_pickle=True) to unpickle it fully.\nDetails: {str(error).splitlines()[0]}"
        ) from error


@dataclass
class Rule:
    """
    One group of source tensors and how it becomes tensors of a target component.

    ``sources`` maps each source key to ``(expected shape, why)``: ``why`` names the architecture values that
    determine the shape, and is quoted when the checkpoint disagrees.
    """

    target: str
    sources: dict[str, tuple[tuple[int, ...], str]]
    build: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    hints: dict[str, str] = field(default_factory=dict)


def check_key_sets(
    actual: Iterable[str],
    expected: Iterable[str],
    what: str,
    *,
    hints: Mapping[str, str] | None = None,
    context: str = "",
) -> None:
    """Raise a :class:`ConversionError` listing every missing and every unexpected key."""
    actual, expected = set(actual), set(expected)
    missing, unexpected = expected - actual, actual - expected
    if not missing and not unexpected:
        return
    parts = [f"{what}: the keys do not match the architecture read from the checkpoint{context}."]
    if missing:
        parts.append(f"  {len(missing)} missing key(s):\n{format_keys(missing)}")
    if unexpected:
        parts.append(f"  {len(unexpected)} unexpected key(s) that nothing would consume:\n{format_keys(unexpected)}")
    for key, hint in sorted((hints or {}).items()):
        if key in missing:
            parts.append(f"  note on {key}: {hint}")
    parts.append(
        "  Nothing was converted. Check that the file is the right kind of checkpoint for this option, and that it "
        "was saved by the architecture described above."
    )
    raise ConversionError("\n".join(parts))


def apply_rules(
    state_dict: Mapping[str, torch.Tensor], rules: list[Rule], what: str, *, context: str = "", copy: bool = True
):
    """
    Check that ``state_dict`` has exactly the keys and shapes the rules expect, then build the target tensors.

    Returns ``{target component: {key: tensor}}`` of contiguous float32 tensors: fresh copies, or with
    ``copy=False`` possibly the source tensors themselves (to spare memory when the source is thrown away).
    """
    expected: dict[str, tuple[tuple[int, ...], str]] = {}
    hints: dict[str, str] = {}
    for rule in rules:
        overlap = expected.keys() & rule.sources.keys()
        if overlap:  # a bug in a rule table, not in the checkpoint
            raise AssertionError(f"source keys used twice: {sorted(overlap)}")
        expected.update(rule.sources)
        hints.update(rule.hints)
    check_key_sets(state_dict.keys(), expected.keys(), what, hints=hints, context=context)

    bad = []
    for key, (shape, why) in expected.items():
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            bad.append(f"  {key}: is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(shape):
            bad.append(f"  {key}: shape {tuple(value.shape)}, expected {tuple(shape)} from {why}")
    if bad:
        raise ConversionError(
            f"{what}: {len(bad)} tensor(s) have shapes that do not fit the architecture{context}:\n"
            + "\n".join(sorted(bad)[:25])
            + ("\n  ..." if len(bad) > 25 else "")
        )

    out: dict[str, dict[str, torch.Tensor]] = {}
    owned: set[int] = set()  # storages already handed out uncopied
    for rule in rules:
        built = rule.build({key: state_dict[key] for key in rule.sources})
        target = out.setdefault(rule.target, {})
        for key, value in built.items():
            if key in target:
                raise AssertionError(f"target key written twice: {rule.target}.{key}")
            if value.is_floating_point():
                value = value.to(torch.float32)
            value = value.detach()
            if not copy and _owns_storage(value) and value.untyped_storage().data_ptr() not in owned:
                owned.add(value.untyped_storage().data_ptr())
                target[key] = value
            else:  # views and shared storages are copied, so saved weights never share memory
                target[key] = value.clone(memory_format=torch.contiguous_format)
    return out


def _owns_storage(tensor: torch.Tensor) -> bool:
    return (
        not tensor.is_meta
        and tensor.is_contiguous()
        and tensor.storage_offset() == 0
        and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    )


def load_into_model(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> torch.nn.Module:
    """
    Load ``state`` into ``model`` after checking that it fills every parameter and persistent buffer exactly
    (same key set, same shapes). ``model`` may have been created on the ``meta`` device; its tensors are replaced.
    """
    reference = model.state_dict()
    check_key_sets(
        state.keys(),
        reference.keys(),
        f"{what} (diffusers side)",
        context=" — this is a converter bug or an unsupported variant of the architecture",
    )
    bad = [
        f"  {key}: converted {tuple(state[key].shape)} vs model {tuple(value.shape)}"
        for key, value in reference.items()
        if tuple(state[key].shape) != tuple(value.shape)
    ]
    if bad:
        raise ConversionError(
            f"{what}: converted tensors do not fit the diffusers model built from the inferred config:\n"
            + "\n".join(bad[:25])
        )
    model.load_state_dict(dict(state), strict=True, assign=True)
    leftovers = [
        name for name, tensor in list(model.named_parameters()) + list(model.named_buffers()) if tensor.is_meta
    ]
    if leftovers:
        raise ConversionError(f"{what}: tensors left unset after loading:\n{format_keys(leftovers)}")
    return model
