"""Tiny settings for the training-script tests."""

from __future__ import annotations

TINY = {
    "clip": "--hidden_size 32 --num_hidden_layers 1 --num_attention_heads 2 --max_length 16 --image_size 32 "
    "--hard_negative_edits 2 --hard_negative_images --hard_negative_top_k 2 --hard_negative_mining_steps 1 "
    "--position_embedding_std 1.0",
    "prior": "--num_layers 1 --num_attention_heads 2 --attention_head_dim 8 --validation_num_inference_steps 2",
    "decoder": "--block_out_channels 16 32 --layers_per_block 1 --attention_head_dim 8 --cross_attention_dim 32 "
    "--validation_num_inference_steps 2 --num_validation_images 2",
    "superres": "--block_out_channels 16 32 --layers_per_block 1 --validation_num_inference_steps 2 "
    "--num_validation_images 2",
}


def tiny_argv(stage: str, data_dir, output_dir, steps: int = 2, clip_dir=None, extra: str = "") -> list[str]:
    """Arguments for a few steps of ``train_<stage>.py`` with a tiny model on the test dataset."""
    argv = [
        "--train_data_dir", str(data_dir), "--output_dir", str(output_dir), "--max_train_steps", str(steps),
        "--train_batch_size", "8", "--validation_samples", "4", "--validation_steps", str(steps),
        "--logging_steps", "1", "--checkpointing_steps", str(steps), "--lr_warmup_steps", "1", "--report_to", "none",
    ]
    if clip_dir is not None:
        argv += ["--pretrained_model_name_or_path", str(clip_dir)]
    return argv + TINY[stage].split() + extra.split()
