"""
Shared plumbing of the unCLIP training scripts (diffusers ``examples/`` style): the common flags, in-memory data, the
frozen-CLIP embedding cache, the accelerate training loop (EMA, checkpoints, resume, validation, time budget) and the
Hub upload. Each ``train_*.py`` script only defines what is particular to its stage: its model, a batch, a loss, how
to validate and what to save.

Determinism: batch ``b`` of a run (its examples, noise, timesteps and condition drops) is a pure function of
``(--seed, b)``, so a run resumed from ``checkpoint-<step>`` continues exactly the loss trajectory of an
uninterrupted one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image

LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# ----------------------------------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------------------------------


def build_parser(description: str, *, pretrained_help: str | None = None, **defaults) -> argparse.ArgumentParser:
    """The flags every script shares (diffusers' names); ``defaults`` overrides their defaults per script."""
    parser = argparse.ArgumentParser(description=description)
    if pretrained_help:
        parser.add_argument("--pretrained_model_name_or_path", required=True, help=pretrained_help)
    data = parser.add_argument_group("data (loaded into memory once)")
    data.add_argument("--train_data_dir", help="an imagefolder with metadata.jsonl (e.g. Shapes World write_dataset)")
    data.add_argument("--dataset_name", help="a Hub dataset with image and caption columns")
    data.add_argument("--dataset_config_name")
    data.add_argument("--image_column", default="image")
    data.add_argument("--caption_column", default="text")
    data.add_argument("--max_train_samples", type=int, help="use only the first N examples")
    data.add_argument("--validation_samples", type=int, default=256, help="held out from the end (at most 10%%)")
    data.add_argument("--cache_dir", help="for datasets and the CLIP embedding cache (default: <train_data_dir>/.unclip_cache)")
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="processes preparing a datasets dataset")
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train_batch_size", type=int, default=64, help="per device")
    train.add_argument("--learning_rate", type=float, default=1e-3)
    train.add_argument("--lr_scheduler", default="constant_with_warmup", choices=LR_SCHEDULERS)
    train.add_argument("--lr_warmup_steps", type=int, default=100)
    train.add_argument("--max_train_steps", type=int, default=1000)
    train.add_argument("--max_train_minutes", type=float, help="stop cleanly after this wall-clock time, then save")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_weight_decay", type=float, default=1e-2)
    train.add_argument("--adam_epsilon", type=float, default=1e-8)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    train.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="EMA of the weights")
    train.add_argument("--ema_decay", type=float, default=0.995, help="the EMA decay reached after warm-up")
    train.add_argument("--ema_power", type=float, default=0.75, help="EMA warm-up: decay = 1 - (1 + step) ** -power")
    train.add_argument("--checkpointing_steps", type=int, default=500, help="0: only at the end")
    train.add_argument("--checkpoints_total_limit", type=int, default=2)
    train.add_argument("--resume_from_checkpoint", help="a checkpoint folder or 'latest' (fresh start if none)")
    train.add_argument("--validation_steps", type=int, default=500, help="also validates at the end; 0: never")
    train.add_argument("--logging_steps", type=int, default=10)
    train.add_argument("--report_to", default="tensorboard", help="tensorboard, wandb, all or none")
    train.add_argument("--push_to_hub", action="store_true")
    train.add_argument("--hub_model_id")
    train.add_argument("--hub_token")
    parser.set_defaults(**defaults)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None, needs_data: bool = True):
    args = parser.parse_args(argv)
    if needs_data and not (args.train_data_dir or args.dataset_name):
        parser.error("give --train_data_dir or --dataset_name")
    if args.lr_scheduler not in ("constant", "constant_with_warmup") and args.max_train_minutes:
        print("note: a time budget may stop training before the lr schedule ends (--max_train_steps sets its length)")
    return args


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


class ImageTextData:
    """
    An image–caption dataset held in memory; the last ``validation_samples`` examples are the validation split. A local
    folder with ``metadata.jsonl`` is read directly (``datasets`` resolves an imagefolder's files slowly: ~15 s per
    2,000 images on a busy 2-core machine); anything else goes through ``datasets.load_dataset``.
    """

    def __init__(self, args):
        self.args = args
        metadata = os.path.join(args.train_data_dir or "", "metadata.jsonl")
        if not args.dataset_name and os.path.isfile(metadata):
            with open(metadata, "rb") as handle:
                raw = handle.read()
            rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
            rows = rows[: args.max_train_samples or None]
            self.captions = [str(row[args.caption_column]) for row in rows]
            self._files = [os.path.join(args.train_data_dir, row["file_name"]) for row in rows]
            fingerprint = hashlib.sha1(raw).hexdigest()
        else:
            import datasets

            if args.dataset_name:
                ds = datasets.load_dataset(args.dataset_name, args.dataset_config_name, split="train", cache_dir=args.cache_dir)
            else:
                ds = datasets.load_dataset(
                    "imagefolder", data_dir=args.train_data_dir, split="train", cache_dir=args.cache_dir,
                    num_proc=args.dataloader_num_workers or None,
                )
            if args.max_train_samples:
                ds = ds.select(range(min(args.max_train_samples, len(ds))))
            self.dataset, self._files = ds, None
            self.captions = [str(c) for c in ds[args.caption_column]]
            fingerprint = ds._fingerprint
        captions_hash = hashlib.sha1("\n".join(self.captions).encode()).hexdigest()
        self.fingerprint = f"{fingerprint}-{len(self.captions)}-{captions_hash}"
        self.num_validation = min(args.validation_samples, len(self.captions) // 10)
        self.num_train = len(self.captions) - self.num_validation

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def validation_indices(self) -> torch.Tensor:
        return torch.arange(self.num_train, len(self))

    @cached_property
    def images(self) -> torch.Tensor:
        """All images as ``uint8 (N, 3, H, W)`` (square: centre-cropped), decoded once."""
        arrays = []
        images = (Image.open(f) for f in self._files) if self._files is not None else self.dataset[self.args.image_column]
        for image in images:
            image = image.convert("RGB")
            side = min(image.size)
            if image.size[0] != image.size[1]:
                left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
                image = image.crop((left, top, left + side, top + side))
            arrays.append(np.asarray(image))
        if len({a.shape for a in arrays}) > 1:
            size = min(a.shape[0] for a in arrays)
            arrays = [np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC)) for a in arrays]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def release_images(self) -> None:
        """Drop the full-resolution images from memory (they are decoded again if needed)."""
        self.__dict__.pop("images", None)

    def images_at(self, size: int) -> torch.Tensor:
        """The images at ``size`` px, ``uint8``; downsampling is the pipeline's bicubic-antialias resize."""
        if self.images.shape[-1] == size:
            return self.images
        return from_model_range(resize(to_model_range(self.images), size))


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` -> float in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def from_model_range(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> ``uint8``."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def upscale(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The pipeline's resize between super-resolution stages (``stages.upscale``): bicubic with antialiasing."""
    return torch.nn.functional.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)


def resize(images: torch.Tensor, size: int, chunk: int = 512) -> torch.Tensor:
    """:func:`upscale` to ``size`` (used both ways), in chunks."""
    return torch.cat([upscale(images[i : i + chunk], (size, size)) for i in range(0, len(images), chunk)])


class IndexSampler:
    """Batch ``b`` = positions ``[b * B, (b + 1) * B)`` of an endless sequence of seeded epoch permutations."""

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = num_examples, batch_size, seed
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        return self._perm

    def __call__(self, batch: int) -> torch.Tensor:
        positions = torch.arange(batch * self.batch_size, (batch + 1) * self.batch_size)
        out = torch.empty_like(positions)
        for epoch in positions.div(self.n, rounding_mode="floor").unique().tolist():
            chosen = positions.div(self.n, rounding_mode="floor") == epoch
            out[chosen] = self._permutation(epoch)[positions[chosen] % self.n]
        return out


def batch_generator(seed: int, batch: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + batch) % (2**63))


# ----------------------------------------------------------------------------------------------------------------------
# Frozen CLIP and its embedding cache
# ----------------------------------------------------------------------------------------------------------------------


def load_clip(path: str, image_side: bool = True, device=None) -> dict:
    """``text_encoder``, ``tokenizer`` (and ``image_encoder``, ``feature_extractor``) from a pipeline-style folder."""
    from transformers import CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

    parts = {
        "text_encoder": CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder").eval(),
        "tokenizer": CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
    }
    if image_side:
        parts["image_encoder"] = CLIPVisionModelWithProjection.from_pretrained(path, subfolder="image_encoder").eval()
        parts["feature_extractor"] = CLIPImageProcessor.from_pretrained(path, subfolder="feature_extractor")
    for model in parts.values():
        if isinstance(model, torch.nn.Module):
            model.requires_grad_(False).to(device or "cpu")
    return parts


def tokenize(tokenizer, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly the pipeline's tokenization: padded to ``model_max_length``, truncated."""
    tokens = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return tokens.input_ids, tokens.attention_mask.bool()


@torch.no_grad()
def encode_text(text_encoder, tokenizer, captions: list[str], batch_size: int = 512):
    """``(text_embeds, last_hidden_state, mask)`` as the pipelines compute them."""
    embeds, hidden, masks = [], [], []
    for i in range(0, len(captions), batch_size):
        ids, mask = tokenize(tokenizer, captions[i : i + batch_size])
        out = text_encoder(ids.to(text_encoder.device))
        embeds.append(out.text_embeds.float().cpu())
        hidden.append(out.last_hidden_state.float().cpu())
        masks.append(mask)
    return torch.cat(embeds), torch.cat(hidden), torch.cat(masks)


def clip_pixels(feature_extractor, images: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """The feature extractor's resize and crop of ``uint8 (N, 3, H, W)`` images, kept ``uint8`` (not normalised)."""
    out = []
    for i in range(0, len(images), chunk):
        batch = list(images[i : i + chunk].permute(0, 2, 3, 1).numpy())
        pixels = feature_extractor(images=batch, do_rescale=False, do_normalize=False, return_tensors="pt")
        out.append(pixels.pixel_values.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def normalize_pixels(feature_extractor, pixels: torch.Tensor) -> torch.Tensor:
    """The feature extractor's rescale + normalise of :func:`clip_pixels` output."""
    mean = torch.tensor(feature_extractor.image_mean, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(feature_extractor.image_std, device=pixels.device).view(1, -1, 1, 1)
    return (pixels.float() * feature_extractor.rescale_factor - mean) / std


@torch.no_grad()
def encode_images(image_encoder, feature_extractor, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    pixels = clip_pixels(feature_extractor, images)
    out = [
        image_encoder(normalize_pixels(feature_extractor, pixels[i : i + batch_size]).to(image_encoder.device)).image_embeds
        for i in range(0, len(pixels), batch_size)
    ]
    return torch.cat(out).float().cpu()


def weights_hash(*models) -> str:
    digest = hashlib.sha1()
    for model in models:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def clip_embeddings(args, data: ImageTextData, clip: dict, accelerator: Accelerator | None = None) -> dict:
    """
    The frozen-CLIP encodings of the whole dataset, computed once and cached as safetensors next to the dataset
    (``--cache_dir``, default ``<train_data_dir>/.unclip_cache``: hidden, so the imagefolder's fingerprint stays the
    same), keyed by the CLIP weights and the dataset fingerprint.

    Returns ``image_embeds (N, D)``, ``caption_index (N,)`` into the unique captions, whose encodings are
    ``text_embeds (U, D)``, ``text_hidden_states (U, L, D)`` and ``text_mask (U, L)``; unique caption 0 is the empty
    caption (classifier-free guidance's unconditional text), listed in ``captions``.
    """
    from safetensors.torch import load_file, save_file

    key = hashlib.sha1(
        f"{weights_hash(clip['text_encoder'], clip['image_encoder'])}{data.fingerprint}".encode()
    ).hexdigest()[:16]
    folder = args.cache_dir or os.path.join(args.train_data_dir or args.output_dir, ".unclip_cache")
    path = os.path.join(folder, f"clip_embeddings-{key}.safetensors")
    is_main = accelerator is None or accelerator.is_main_process
    if not os.path.isfile(path) and is_main:
        start = time.time()
        unique = [""] + sorted(set(data.captions) - {""})
        text_embeds, hidden, mask = encode_text(clip["text_encoder"], clip["tokenizer"], unique)
        position = {caption: i for i, caption in enumerate(unique)}
        tensors = {
            "image_embeds": encode_images(clip["image_encoder"], clip["feature_extractor"], data.images),
            "caption_index": torch.tensor([position[c] for c in data.captions]),
            "text_embeds": text_embeds,
            "text_hidden_states": hidden,
            "text_mask": mask.to(torch.uint8),
        }
        os.makedirs(folder, exist_ok=True)
        save_file(tensors, path + ".tmp", metadata={"captions": json.dumps(unique)})
        os.replace(path + ".tmp", path)
        print(f"cached CLIP embeddings of {len(data)} examples ({len(unique)} captions) in {time.time() - start:.1f}s: {path}")
    if accelerator is not None:
        accelerator.wait_for_everyone()
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        captions = json.loads(handle.metadata()["captions"])
    tensors = load_file(path)
    tensors["text_mask"] = tensors["text_mask"].bool()
    return {**tensors, "captions": captions, "path": path}


# ----------------------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    """What a script contributes to :func:`train`."""

    model: torch.nn.Module  # forward(**batch) -> scalar loss; holds every trained module
    make_batch: Callable[[torch.Tensor, torch.Generator], dict]  # (example indices, generator) -> forward kwargs
    num_examples: int  # training examples (indices 0 .. num_examples - 1)
    save: Callable[[torch.nn.Module, str], object]  # (model with final/EMA weights, folder) -> pipeline or None
    validate: Callable[[torch.nn.Module, str, int], dict] | None = None  # (model, folder, step) -> metrics
    description: str = ""  # for the model card


def make_accelerator(args) -> Accelerator:
    report_to = args.report_to
    if report_to in ("tensorboard", "wandb"):
        import importlib.util

        if importlib.util.find_spec("tensorboard" if report_to == "tensorboard" else "wandb") is None:
            print(f"note: --report_to {report_to} is not installed; metrics go to {args.output_dir}/logs.jsonl only")
            report_to = None
    # one process may train several stages in a row (train_shapes_world.py, the tests), and accelerate keeps one
    # AcceleratorState per process that refuses a second precision (`--mixed_precision auto` changes it between
    # stages), so each stage starts it afresh
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if report_to in (None, "none") else report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
    )
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    set_seed(args.seed)
    return accelerator


def latest_checkpoint(output_dir: str) -> str | None:
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    found = [(int(m.group(1)), name) for name in names if (m := CHECKPOINT_RE.match(name))]
    return os.path.join(output_dir, max(found)[1]) if found else None


def save_checkpoint(args, accelerator: Accelerator, step: int) -> None:
    if not accelerator.is_main_process:
        return
    if args.checkpoints_total_limit:
        found = sorted(int(m.group(1)) for d in os.listdir(args.output_dir) if (m := CHECKPOINT_RE.match(d)))
        for old in found[: max(0, len(found) - args.checkpoints_total_limit + 1)]:
            shutil.rmtree(os.path.join(args.output_dir, f"checkpoint-{old}"))
    accelerator.save_state(os.path.join(args.output_dir, f"checkpoint-{step}"))


def _resume(args, accelerator: Accelerator) -> int:
    if not args.resume_from_checkpoint:
        return 0
    path = args.resume_from_checkpoint
    if path == "latest":
        path = latest_checkpoint(args.output_dir)
    elif not os.path.isdir(path):
        path = os.path.join(args.output_dir, path)
    if path is None or not os.path.isdir(path):
        accelerator.print(f"no checkpoint '{args.resume_from_checkpoint}' found: starting a new training run")
        return 0
    accelerator.print(f"resuming from {path}")
    accelerator.load_state(path)
    return int(CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path))).group(1))


def _tracker_config(args) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool)) and k != "hub_token"}


def train(args, stage: Stage, accelerator: Accelerator) -> dict:
    """Train ``stage`` to ``--max_train_steps`` or ``--max_train_minutes``, then save (EMA weights) and push."""
    params = [p for p in stage.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    ema = None
    if args.use_ema:  # the EMA state is a custom checkpoint object: save_state/load_state carry it
        ema = EMAModel(params, decay=args.ema_decay, use_ema_warmup=True, power=args.ema_power)
        accelerator.register_for_checkpointing(ema)
    model, optimizer, lr_scheduler = accelerator.prepare(stage.model, optimizer, lr_scheduler)
    global_step = _resume(args, accelerator)
    if ema is not None:
        ema.to(accelerator.device)
    if accelerator.is_main_process:
        accelerator.init_trackers(Path(args.output_dir).name or "unclip", config=_tracker_config(args))
    sampler = IndexSampler(stage.num_examples, args.train_batch_size, args.seed)
    accum, processes = args.gradient_accumulation_steps, accelerator.num_processes
    samples_per_step = args.train_batch_size * accum * processes
    accelerator.print(
        f"training {sum(p.numel() for p in params) / 1e6:.2f} M parameters on {stage.num_examples} examples, "
        f"{samples_per_step} samples/step, from step {global_step} to {args.max_train_steps}"
        + (f" or {args.max_train_minutes} min" if args.max_train_minutes else "")
    )

    def with_ema(fn):
        unwrapped = accelerator.unwrap_model(model)
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        unwrapped.eval()
        try:
            with torch.no_grad():
                return fn(unwrapped)
        finally:
            unwrapped.train()
            if ema is not None:
                ema.restore(params)

    def validate(step: int) -> dict:
        if stage.validate is None or not accelerator.is_main_process:
            return {}
        start = time.time()
        metrics = with_ema(lambda m: stage.validate(m, os.path.join(args.output_dir, "validation"), step)) or {}
        metrics = {f"val/{k}": v for k, v in metrics.items()}
        accelerator.log(metrics, step=step)
        log_line(args, {"step": step, **metrics, "validation_seconds": round(time.time() - start, 1)})
        accelerator.print(f"step {step} validation: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    start = time.time()
    train_seconds, window_seconds, window_losses, losses, metrics = 0.0, 0.0, [], [], {}
    last_checkpoint = last_validation = None
    stop_reason = "max_train_steps"
    model.train()
    while global_step < args.max_train_steps:
        over = args.max_train_minutes is not None and time.time() - start >= 60 * args.max_train_minutes
        if processes > 1:
            over = bool(accelerator.reduce(torch.tensor(float(over), device=accelerator.device), "max").item())
        if over:
            stop_reason = "max_train_minutes"
            break
        tick = time.perf_counter()
        step_loss = 0.0
        for micro in range(accum):
            b = (global_step * accum + micro) * processes + accelerator.process_index
            batch = stage.make_batch(sampler(b), batch_generator(args.seed, b))
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with accelerator.no_sync(model) if micro < accum - 1 else nullcontext():
                loss = model(**batch)
                accelerator.backward(loss / accum)
            step_loss += loss.detach().float().item() / accum
        if args.max_grad_norm:
            accelerator.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        global_step += 1
        elapsed = time.perf_counter() - tick
        train_seconds += elapsed
        window_seconds += elapsed
        window_losses.append(step_loss)
        losses.append(step_loss)
        if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
            logs = {
                "loss": float(np.mean(window_losses)), "lr": lr_scheduler.get_last_lr()[0],
                "samples_per_second": len(window_losses) * samples_per_step / window_seconds,
            }
            accelerator.log(logs, step=global_step)
            if accelerator.is_main_process:
                log_line(args, {"step": global_step, **logs, "minutes": round((time.time() - start) / 60, 2)})
            accelerator.print(
                f"step {global_step}: loss {logs['loss']:.4f}, lr {logs['lr']:.2e}, "
                f"{logs['samples_per_second']:.1f} samples/s, {(time.time() - start) / 60:.1f} min"
            )
            window_losses, window_seconds = [], 0.0
        if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
            save_checkpoint(args, accelerator, global_step)
            last_checkpoint = global_step
        if args.validation_steps and global_step % args.validation_steps == 0:
            metrics, last_validation = validate(global_step), global_step
    accelerator.wait_for_everyone()
    if args.checkpointing_steps and last_checkpoint != global_step:
        save_checkpoint(args, accelerator, global_step)
    if args.validation_steps and last_validation != global_step:
        metrics = validate(global_step)
    summary = {
        "steps": global_step, "stop_reason": stop_reason, "minutes": round((time.time() - start) / 60, 2),
        "samples_per_second": round(len(losses) * samples_per_step / train_seconds, 2) if train_seconds else None,
        "final_loss": float(np.mean(losses[-args.logging_steps :])) if losses else None, **metrics,
    }
    if accelerator.is_main_process:
        pipe = with_ema(lambda m: stage.save(m, args.output_dir))
        write_card(args.output_dir, pipe, description=stage.description)
        Path(args.output_dir, "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if args.push_to_hub:
            push_folder(args, args.output_dir, pipe, stage.description)
    accelerator.print(f"done: {summary}")
    accelerator.end_training()
    return summary


def log_line(args, record: dict) -> None:
    with open(os.path.join(args.output_dir, "logs.jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def save_grid(rows: list[torch.Tensor], path: str, scale: int = 1) -> Image.Image:
    """Rows of ``uint8 (N, 3, H, W)`` images (equal N; resized to the first row's size, nearest) as one PNG."""
    size = rows[0].shape[-1] * scale
    rows = [torch.nn.functional.interpolate(r.float(), size=(size, size), mode="nearest").to(torch.uint8) for r in rows]
    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # (3, rows*H, N*W)
    image = Image.fromarray(grid.permute(1, 2, 0).numpy())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)
    return image


# ----------------------------------------------------------------------------------------------------------------------
# Model cards and the Hub
# ----------------------------------------------------------------------------------------------------------------------


def write_card(folder: str, pipe=None, repo_id: str | None = None, description: str = "") -> str:
    """``README.md``: the pipeline model card when the folder is a pipeline, else a card listing its components."""
    if pipe is not None:
        from unclip_pipelines.pipelines.model_card import write_model_card

        return write_model_card(pipe, folder, repo_id=repo_id, description=description)
    from huggingface_hub import ModelCard, ModelCardData

    parts = sorted(d.name for d in Path(folder).iterdir() if d.is_dir() and not CHECKPOINT_RE.match(d.name))
    parts = [p for p in parts if p not in ("logs", "validation")]
    data = ModelCardData(library_name="diffusers", license="apache-2.0", tags=["unclip", "unclip-pipelines"])
    body = (
        f"# {repo_id or Path(folder).name}\n\nComponents of an [unCLIP](https://arxiv.org/abs/2204.06125) model, in "
        f"Karlo's folder layout: {', '.join(f'`{p}`' for p in parts)}.\n{description}\n\n"
        "Assemble a full pipeline with `training/assemble_pipeline.py`.\n"
    )
    path = os.path.join(folder, "README.md")
    ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").save(path)
    return path


def push_folder(args, folder: str, pipe=None, description: str = "") -> str:
    """Create ``--hub_model_id`` (default: the folder's name), write its model card and upload the folder."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(args.hub_model_id or Path(folder).name, exist_ok=True, token=args.hub_token).repo_id
    write_card(folder, pipe, repo_id=repo_id, description=description)
    upload_folder(
        repo_id=repo_id, folder_path=folder, token=args.hub_token, commit_message="End of training",
        ignore_patterns=["checkpoint-*", "logs/*", "*.tmp"],
    )
    print(f"pushed {folder} to https://huggingface.co/{repo_id}")
    return repo_id


def count_parameters(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"
