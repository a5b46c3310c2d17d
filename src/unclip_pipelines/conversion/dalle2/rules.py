"""
Building blocks shared by the prior and the decoder: counting numbered blocks, one
:class:`~unclip_pipelines.conversion.common.Rule` per target tensor, empty (meta) target models and loading them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..common import ConversionError, Rule, load_into_model


def _count_indices(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in keys if (m := pattern.match(key))}
    if indices and indices != set(range(max(indices) + 1)):
        raise ConversionError(f"the checkpoint's {prefix}* blocks are not numbered 0..n-1: {sorted(indices)}")
    return max(indices) + 1 if indices else 0


def _mapped_rules(
    target: str,
    model_state: Mapping[str, torch.Tensor],
    to_source,
    why,
) -> list[Rule]:
    rules = []
    for key, tensor in model_state.items():
        source = to_source(key)
        rules.append(
            Rule(
                target=target,
                sources={source: (tuple(tensor.shape), why(key))},
                build=lambda d, source=source, key=key: {key: d[source]},
            )
        )
    return rules


def _meta_model(cls, config: dict):
    with torch.device("meta"):
        return cls(**config)


def _finish(model, state: dict, what: str):
    model = load_into_model(model, state, what)
    model.eval()
    return model
