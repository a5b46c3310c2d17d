"""Model cards for unCLIP pipeline folders (written by ``save_pretrained`` and ``push_to_hub``)."""

from __future__ import annotations

import os

from huggingface_hub import ModelCard, ModelCardData

_PIPELINE_TAGS = {
    "UnCLIPPipeline": "text-to-image",
    "UnCLIPPriorPipeline": "text-to-image",
    "UnCLIPDecoderPipeline": "image-to-image",
    "UnCLIPImageVariationPipeline": "image-to-image",
}


def model_card_text(pipe, repo_id: str | None = None, description: str | None = None) -> str:
    """The README of a pipeline folder: metadata for the Hub, the components, and how to load it."""
    name = type(pipe).__name__
    data = ModelCardData(
        library_name="diffusers",
        license="apache-2.0",
        pipeline_tag=_PIPELINE_TAGS.get(name, "text-to-image"),
        tags=["unclip", "unclip-pipelines", "diffusers", name],
    )
    rows = []
    for component, (library, class_name) in sorted(
        (k, v) for k, v in pipe.config.items() if isinstance(v, (list, tuple)) and len(v) == 2 and v[1]
    ):
        rows.append(f"| `{component}` | `{library}.{class_name}` |")
    target = repo_id or "path/to/this/folder"
    body = f"""
# {repo_id or name}

An [unCLIP](https://arxiv.org/abs/2204.06125) (DALL·E 2) `{name}` for diffusers, in Karlo's folder layout.
{description or ""}

## Use

```python
import unclip_pipelines  # registers the unCLIP classes with diffusers
from unclip_pipelines import {name}

pipe = {name}.from_pretrained("{target}")
```

## Components

| component | class |
| --- | --- |
{chr(10).join(rows)}
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def write_model_card(pipe, folder: str, repo_id: str | None = None, description: str | None = None) -> str:
    """Write ``README.md`` into ``folder``; returns its path."""
    path = os.path.join(folder, "README.md")
    ModelCard(model_card_text(pipe, repo_id, description)).save(path)
    return path
