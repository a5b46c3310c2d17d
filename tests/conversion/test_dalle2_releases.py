"""
Parity with *older* DALLE2-pytorch releases (opt-in).

Only one release can be installed at a time, so each release's source sits in its own folder under
``$DALLE2_PYTORCH_RELEASES`` (``$DALLE2_PYTORCH_RELEASES/0.15.4/dalle2_pytorch/...``, from ``git archive`` of the
release tag or an unpacked wheel). A subprocess with that folder first on ``sys.path`` builds tiny random models and
saves their state dicts, inputs and outputs; the test converts them and compares. The installed test extra supplies
the dependencies (0.x / 1.0 – 1.12 releases also need ``einops-exts``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unclip_pipelines.conversion.dalle2 import convert_dalle2_decoder, convert_dalle2_prior

from . import dalle2_source as src

ROOT = os.environ.get("DALLE2_PYTORCH_RELEASES")
if not ROOT:
    pytest.skip("set DALLE2_PYTORCH_RELEASES to run the release-parity tests", allow_module_level=True)

RELEASES = sorted(p.name for p in Path(ROOT).iterdir() if (p / "dalle2_pytorch" / "__init__.py").exists())
TOL = 1e-5
#: releases whose decoders this converter supports (and whose sparse attention builds: 1.4.3 cannot)
DECODER_OK = lambda v: (v < (0, 16, 0) or v >= (1, 1, 0)) and v != (1, 4, 3)  # noqa: E731
PRIOR_OK = lambda v: not (0, 21, 0) <= v < (0, 23, 0)  # noqa: E731


def _version(name):
    return tuple(int(p) for p in name.split(".")[:3])


def _export(release: str, command: str, tmp_path, **kwargs):
    out = tmp_path / f"{command}.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(ROOT) / release), os.environ.get("PYTHONPATH", "")])}
    script = Path(src.__file__)
    done = subprocess.run(
        [sys.executable, str(script), command, str(out), json.dumps(kwargs)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = torch.load(out, weights_only=True)
    assert data["version"] == release
    return data


@pytest.mark.parametrize("release", [r for r in RELEASES if PRIOR_OK(_version(r))])
def test_prior_release_parity(release, tmp_path):
    kwargs = {"self_cond": True} if _version(release) >= (1, 6, 1) else {"normformer": True}
    data = _export(release, "export_prior", tmp_path, **kwargs)
    model, _, notes = convert_dalle2_prior(data["model"], version=data["version"], config={"net": kwargs})
    inputs, ones = data["inputs"], torch.ones(3, dtype=torch.bool)
    call = {"proj_embedding": inputs["text_embed"], "encoder_hidden_states": inputs["text_encodings"],
            "attention_mask": inputs["mask"]}
    if model.config.self_cond:
        call["self_cond"] = inputs["self_cond"]
    with torch.no_grad():
        cond = model(inputs["image_embed"], inputs["timesteps"], **call).predicted_image_embedding
        null = model(inputs["image_embed"], inputs["timesteps"], text_cond_drop_mask=ones, image_cond_drop_mask=ones,
                     **call).predicted_image_embedding
    assert (cond - data["outputs"]["cond"]).abs().max() <= TOL
    assert (null - data["outputs"]["null"]).abs().max() <= TOL


@pytest.mark.parametrize("release", [r for r in RELEASES if DECODER_OK(_version(r))])
def test_decoder_release_parity(release, tmp_path):
    unets = [dict(src.UNET_1), dict(src.UNET_2)]
    data = _export(release, "export_decoder", tmp_path, unets=unets, image_sizes=[16, 32])
    config = {"unets": [{"resnet_groups": u.get("resnet_groups", 8)} for u in unets]}
    models, _, _ = convert_dalle2_decoder(data["model"], version=data["version"], config=config)
    for model, item, ref in zip(models, data["inputs"], data["outputs"]):
        kwargs = {"class_labels": item["image_embed"]}
        if "lowres_cond_img" in item:
            kwargs["lowres_cond_img"] = item["lowres_cond_img"]
        if "text_encodings" in item:
            kwargs.update(encoder_hidden_states=item["text_encodings"], attention_mask=item["mask"])
        drop = torch.ones(item["x"].shape[0], dtype=torch.bool)
        with torch.no_grad():
            cond = model(item["x"], item["t"], **kwargs).sample
            null = model(item["x"], item["t"], text_cond_drop_mask=drop, image_cond_drop_mask=drop, **kwargs).sample
        assert (cond - ref["cond"]).abs().max() <= TOL
        assert (null - ref["null"]).abs().max() <= TOL
