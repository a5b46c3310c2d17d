"""
Train unCLIP's diffusion prior (paper §2.2): a causal ``PriorTransformer`` that predicts the (normalised) CLIP image
embedding x_0 from the noisy one, the timestep, the caption's CLIP text embedding and its token encodings.

    accelerate launch training/train_prior.py --pretrained_model_name_or_path runs/clip \
        --train_data_dir data/shapes --output_dir runs/prior --max_train_minutes 6

The frozen CLIP encodings are computed once and cached next to the dataset. Targets are normalised per dimension with
the training set's mean and std, which are stored in the prior (``clip_mean``/``clip_std``, undone by
``post_process_latents`` at sampling time). The text condition is replaced by the empty caption's encoding 10 % of the
time for classifier-free guidance. Saves an ``UnCLIPPriorPipeline`` folder (``prior``, ``prior_scheduler``,
``text_encoder``, ``tokenizer``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on a shared CPU

import sys

import torch
import torch.nn.functional as F
from diffusers import PriorTransformer

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import common
from unclip_pipelines import UnCLIPPriorPipeline, UnCLIPScheduler


def parse_args(argv=None):
    parser = common.build_parser(
        __doc__.split("\n\n")[0], pretrained_help="folder with the frozen CLIP (text_encoder, tokenizer, image_encoder, "
        "feature_extractor), e.g. the output of train_clip.py",
        train_batch_size=256, learning_rate=5e-4, max_train_steps=3000, validation_steps=500,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--num_layers", type=int, default=6)
    model.add_argument("--num_attention_heads", type=int, default=4)
    model.add_argument("--attention_head_dim", type=int, default=64)
    model.add_argument("--num_train_timesteps", type=int, default=1000)
    model.add_argument("--prior_clip_sample_range", type=float, default=5.0, help="x_0 clip of the prior scheduler")
    model.add_argument("--text_drop_prob", type=float, default=0.1, help="empty-caption rate (guidance)")
    val = parser.add_argument_group("validation")
    val.add_argument("--validation_num_inference_steps", type=int, default=25)
    val.add_argument("--validation_guidance_scale", type=float, default=4.0)
    return common.parse_args(parser, argv)


class PriorTrainer(torch.nn.Module):
    """The prior and its x_0-prediction loss."""

    def __init__(self, prior: PriorTransformer, scheduler: UnCLIPScheduler):
        super().__init__()
        self.prior = prior
        self.scheduler = scheduler

    def forward(self, x0, noise, timesteps, text_embeds, hidden_states, mask):
        noisy = self.scheduler.add_noise(x0, noise, timesteps)
        prediction = self.prior(
            noisy, timestep=timesteps, proj_embedding=text_embeds, encoder_hidden_states=hidden_states,
            attention_mask=mask,
        ).predicted_image_embedding
        return F.mse_loss(prediction.float(), x0.float())


def prior_scheduler(args) -> UnCLIPScheduler:
    return UnCLIPScheduler(
        num_train_timesteps=args.num_train_timesteps, variance_type="fixed_small_log", prediction_type="sample",
        clip_sample=True, clip_sample_range=args.prior_clip_sample_range, beta_schedule="squaredcos_cap_v2",
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = common.make_accelerator(args)
    data = common.ImageTextData(args)
    clip = common.load_clip(args.pretrained_model_name_or_path, device=accelerator.device)
    cache = common.clip_embeddings(args, data, clip, accelerator)
    data.release_images()
    image_embeds, caption_index = cache["image_embeds"], cache["caption_index"]
    text_embeds, hidden, text_mask = cache["text_embeds"], cache["text_hidden_states"], cache["text_mask"]
    train_embeds = image_embeds[: data.num_train]
    mean, std = train_embeds.mean(0, keepdim=True), train_embeds.std(0, keepdim=True).clamp(min=1e-4)
    targets = (image_embeds - mean) / std
    outside = (targets[: data.num_train].abs() > args.prior_clip_sample_range).float().mean().item()
    accelerator.print(f"normalised targets: |x| max {targets.abs().max():.2f}, {outside:.2%} outside the clip range")

    dim, length = image_embeds.shape[1], clip["tokenizer"].model_max_length
    prior = PriorTransformer(
        num_attention_heads=args.num_attention_heads, attention_head_dim=args.attention_head_dim,
        num_layers=args.num_layers, embedding_dim=dim, num_embeddings=length, additional_embeddings=4,
    )
    with torch.no_grad():
        prior.clip_mean.copy_(mean)
        prior.clip_std.copy_(std)
    prior.clip_mean.requires_grad_(False)
    prior.clip_std.requires_grad_(False)
    scheduler = prior_scheduler(args)
    model = PriorTrainer(prior, scheduler)
    accelerator.print(f"prior: {common.count_parameters(prior)} parameters, embedding {dim}, {length} tokens")

    def make_batch(indices, generator):
        captions = caption_index[indices]
        dropped = torch.rand(len(indices), generator=generator) < args.text_drop_prob
        captions = torch.where(dropped, torch.zeros_like(captions), captions)  # caption 0 is ""
        x0 = targets[indices]
        return {
            "x0": x0,
            "noise": torch.randn(x0.shape, generator=generator),
            "timesteps": torch.randint(0, args.num_train_timesteps, (len(indices),), generator=generator),
            "text_embeds": text_embeds[captions], "hidden_states": hidden[captions], "mask": text_mask[captions],
        }

    val = data.validation_indices

    def validate(model: PriorTrainer, folder, step):
        pipe = UnCLIPPriorPipeline(model.prior, clip["text_encoder"], clip["tokenizer"], prior_scheduler(args))
        pipe.set_progress_bar_config(disable=True)
        captions = caption_index[val]
        device = accelerator.device
        sampled = pipe(
            text_model_output=(text_embeds[captions].to(device), hidden[captions].to(device)),
            text_attention_mask=text_mask[captions].to(device),
            num_inference_steps=args.validation_num_inference_steps, guidance_scale=args.validation_guidance_scale,
            generator=torch.Generator().manual_seed(args.seed),
        ).image_embeds.float().cpu()
        truth = image_embeds[val]
        # does CLIP pick the right caption (among the validation captions) for the sampled embedding?
        unique = captions.unique()
        text = F.normalize(text_embeds[unique], dim=-1)
        own = (captions[:, None] == unique[None]).float().argmax(1)

        def caption_accuracy(embeds):
            return ((F.normalize(embeds, dim=-1) @ text.T).argmax(1) == own).float().mean().item()

        return {
            "cosine_to_true_embedding": F.cosine_similarity(sampled, truth).mean().item(),
            "caption_accuracy": caption_accuracy(sampled),
            "caption_accuracy_of_true_embeddings": caption_accuracy(truth),
            "norm_ratio": (sampled.norm(dim=-1).mean() / truth.norm(dim=-1).mean()).item(),
        }

    def save(model: PriorTrainer, folder):
        pipe = UnCLIPPriorPipeline(model.prior, clip["text_encoder"], clip["tokenizer"], prior_scheduler(args))
        pipe.save_pretrained(folder)
        return pipe

    stage = common.Stage(
        model=model, make_batch=make_batch, num_examples=data.num_train, save=save,
        validate=validate if len(val) else None,
        description=f"An unCLIP diffusion prior ({args.num_layers} layers) trained with x_0 prediction.",
    )
    return common.train(args, stage, accelerator)


if __name__ == "__main__":
    main()
