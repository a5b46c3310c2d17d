"""Checkpoints: resuming continues the step count and the exact loss trajectory; the time budget stops cleanly."""

import json

import pytest
import torch
from safetensors.torch import load_file

from training import common, train_prior

from .utils import tiny_argv

# the loop, checkpointing and batch construction are shared (common.py); the prior is the cheapest stage to run 3 times
SCRIPTS = {"prior": (train_prior, "prior")}


def _losses(folder):
    lines = [json.loads(line) for line in (folder / "logs.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


@pytest.mark.parametrize("stage", sorted(SCRIPTS))
def test_resume_matches_uninterrupted_run(stage, data_dir, clip_dir, tmp_path):
    module, weights = SCRIPTS[stage]
    extra = "--gradient_accumulation_steps 2 --validation_steps 0 --train_batch_size 4"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    module.main(tiny_argv(stage, data_dir, straight, steps=4, clip_dir=clip_dir, extra=extra))
    module.main(tiny_argv(stage, data_dir, resumed, steps=2, clip_dir=clip_dir, extra=extra))
    assert (resumed / "checkpoint-2" / "custom_checkpoint_0.pkl").exists()  # the EMA state
    summary = module.main(
        tiny_argv(stage, data_dir, resumed, steps=4, clip_dir=clip_dir, extra=extra + " --resume_from_checkpoint latest")
    )
    assert summary["steps"] == 4
    assert sorted(_losses(resumed)) == [1, 2, 3, 4]
    assert _losses(resumed) == _losses(straight)
    (file,) = (straight / weights).glob("*.safetensors")
    a, b = load_file(file), load_file(resumed / weights / file.name)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_budget_stops_and_saves(data_dir, clip_dir, tmp_path):
    argv = tiny_argv("prior", data_dir, tmp_path, steps=1000, clip_dir=clip_dir, extra="--max_train_minutes 0.005")
    summary = train_prior.main(argv)
    assert summary["stop_reason"] == "max_train_minutes" and summary["steps"] < 1000
    assert (tmp_path / f"checkpoint-{summary['steps']}").is_dir()
    assert (tmp_path / "model_index.json").exists() and "samples_per_second" in summary


def test_index_sampler_is_deterministic_epochs():
    sampler = common.IndexSampler(10, 4, seed=3)
    first_epochs = torch.cat([sampler(b) for b in range(5)])  # 20 positions = 2 epochs
    assert sorted(first_epochs[:10].tolist()) == list(range(10))
    assert sorted(first_epochs[10:].tolist()) == list(range(10))
    assert torch.equal(common.IndexSampler(10, 4, seed=3)(3), sampler(3))
    assert not torch.equal(first_epochs[:10], first_epochs[10:])
