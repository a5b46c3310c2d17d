"""Argument checks shared by the unCLIP pipelines: each error says what to change."""

from __future__ import annotations

import numbers

import torch

OUTPUT_TYPES = ("pil", "np", "pt")


def check_prompt(
    prompt, name: str = "prompt", allow_none: bool = False, allow_empty_text: bool = False
) -> list[str] | None:
    """Normalise ``prompt`` to a non-empty list of strings (non-empty ones unless ``allow_empty_text``)."""
    if prompt is None:
        if allow_none:
            return None
        raise ValueError(f"`{name}` is required: pass a string or a list of strings.")
    if isinstance(prompt, str):
        prompt = [prompt]
    if not isinstance(prompt, (list, tuple)) or not all(isinstance(p, str) for p in prompt):
        raise TypeError(f"`{name}` must be a string or a list of strings, got {type(prompt).__name__}.")
    if len(prompt) == 0:
        raise ValueError(f"`{name}` is an empty list: pass at least one prompt.")
    empty = [i for i, p in enumerate(prompt) if not p.strip()]
    if empty and not allow_empty_text:
        raise ValueError(f"`{name}` has empty text at position(s) {empty}: give every prompt some words.")
    return list(prompt)


def check_negative_prompt(negative_prompt, batch_size: int) -> list[str] | None:
    """A negative prompt may be empty text; it must match the prompts in number (or be a single string)."""
    if negative_prompt is None:
        return None
    if isinstance(negative_prompt, str):
        return [negative_prompt] * batch_size
    if not isinstance(negative_prompt, (list, tuple)) or not all(isinstance(p, str) for p in negative_prompt):
        raise TypeError(
            f"`negative_prompt` must be a string or a list of strings, got {type(negative_prompt).__name__}."
        )
    if len(negative_prompt) != batch_size:
        raise ValueError(
            f"`negative_prompt` has {len(negative_prompt)} entries but there are {batch_size} prompts: pass one "
            "negative prompt per prompt, or a single string."
        )
    return list(negative_prompt)


def check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def check_steps(value, name: str, num_stages: int | None = None) -> list[int] | int:
    """Steps are a positive int; for the super-resolution cascade also a list with one entry per stage."""
    if num_stages is not None and isinstance(value, (list, tuple)):
        if len(value) != num_stages:
            raise ValueError(f"`{name}` lists {len(value)} step counts but the cascade has {num_stages} stage(s).")
        for v in value:
            check_positive_int(v, name)
        return list(value)
    check_positive_int(value, name)
    return [value] * num_stages if num_stages is not None else value


def check_guidance(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"`{name}` must be a number ≥ 0 (guidance is off at ≤ 1), got {value!r}.")


def check_output_type(output_type) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")


def check_generator(generator, batch_size: int) -> None:
    if isinstance(generator, list) and len(generator) != batch_size:
        raise ValueError(
            f"You passed {len(generator)} generators for a batch of {batch_size} images "
            "(prompts x num_images_per_prompt): pass one generator, or one per image."
        )


def check_embeddings(embeds, name: str, width: int, ndim: int = 2) -> None:
    if not isinstance(embeds, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(embeds).__name__}.")
    if embeds.ndim != ndim or embeds.shape[-1] != width:
        expected = "(batch, " + ("tokens, " if ndim == 3 else "") + f"{width})"
        raise ValueError(
            f"`{name}` has shape {tuple(embeds.shape)}; this model needs {expected}: use embeddings of the CLIP "
            "model the pipeline was trained with."
        )


def check_callback_inputs(names, allowed: list[str]) -> None:
    unknown = [n for n in names or [] if n not in allowed]
    if unknown:
        raise ValueError(f"`callback_on_step_end_tensor_inputs` may only name {allowed}, got {unknown}.")


def check_eta(value, name: str) -> None:
    """DDIM's η: ``None`` (the stage's own sampler) or a number in [0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(
            f"`{name}` must be None (the stage's own sampler) or a number in [0, 1] (DDIM's η: 0 is deterministic "
            f"and inverts exactly, 1 is as random as ancestral sampling), got {value!r}."
        )


def check_num_frames(value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise ValueError(f"`num_frames` must be an integer ≥ 2 (the two end frames included), got {value!r}.")
