"""
Train unCLIP's decoder (paper §2.1): a GLIDE-style diffusion U-Net (``UNet2DConditionModel``) that generates the
low-resolution image from its CLIP image embedding and caption, through ``UnCLIPTextProjModel`` (the embedding is
added to the timestep embedding and projected into 4 extra context tokens prepended to the caption's tokens).

    accelerate launch training/train_decoder.py --pretrained_model_name_or_path runs/clip \
        --train_data_dir data/shapes --output_dir runs/decoder --resolution 32 --max_train_minutes 40

For classifier-free guidance the image embedding is replaced by the learned null embedding 10 % of the time and the
caption by the empty caption 50 % of the time (paper §2.1). v-prediction by default (``--prediction_type epsilon`` for
GLIDE's and Karlo's noise prediction), MSE loss (optionally Min-SNR weighted), fixed variance. Saves an ``UnCLIPDecoderPipeline`` folder (``decoder``, ``text_proj``,
``decoder_scheduler``, ``text_encoder``, ``tokenizer``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on a shared CPU

import sys

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import common, losses
from unclip_pipelines import UnCLIPDecoderPipeline, UnCLIPScheduler, UnCLIPTextProjModel


def parse_args(argv=None):
    parser = common.build_parser(
        __doc__.split("\n\n")[0], pretrained_help="folder with the frozen CLIP (text_encoder, tokenizer, image_encoder, "
        "feature_extractor), e.g. the output of train_clip.py",
        max_train_steps=5000, validation_steps=500,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--resolution", type=int, default=32, help="decoder output size (32 or 64)")
    model.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 128])
    model.add_argument("--layers_per_block", type=int, default=1)
    model.add_argument("--attention_head_dim", type=int, default=32)
    model.add_argument("--cross_attention_dim", type=int, default=128)
    model.add_argument("--num_train_timesteps", type=int, default=1000)
    model.add_argument("--image_drop_prob", type=float, default=0.1, help="null image embedding rate (guidance)")
    model.add_argument("--caption_drop_prob", type=float, default=0.5, help="empty caption rate")
    losses.add_prediction_arguments(model)
    val = parser.add_argument_group("validation")
    val.add_argument("--num_validation_images", type=int, default=8)
    val.add_argument("--validation_num_inference_steps", type=int, default=25)
    val.add_argument("--validation_guidance_scale", type=float, default=4.0)
    return common.parse_args(parser, argv)


def build_decoder(args) -> UNet2DConditionModel:
    """Karlo's decoder layout, small: a plain first level, simple cross-attention on the others and in the middle."""
    channels = tuple(args.block_out_channels)
    return UNet2DConditionModel(
        sample_size=args.resolution, in_channels=3, out_channels=3, layers_per_block=args.layers_per_block,
        block_out_channels=channels,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (len(channels) - 1),
        up_block_types=("SimpleCrossAttnUpBlock2D",) * (len(channels) - 1) + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=args.cross_attention_dim,
        attention_head_dim=args.attention_head_dim, resnet_time_scale_shift="scale_shift",
        class_embed_type="identity", norm_num_groups=min(32, channels[0]),
    )


def decoder_scheduler(args) -> UnCLIPScheduler:
    return UnCLIPScheduler(
        num_train_timesteps=args.num_train_timesteps, variance_type="fixed_small_log", prediction_type=args.prediction_type,
        clip_sample=True, clip_sample_range=1.0, beta_schedule="squaredcos_cap_v2",
    )


class DecoderTrainer(torch.nn.Module):
    """Decoder + text_proj and the diffusion loss (``--prediction_type``)."""

    def __init__(self, decoder, text_proj, scheduler, snr_gamma=None):
        super().__init__()
        self.decoder, self.text_proj, self.scheduler, self.snr_gamma = decoder, text_proj, scheduler, snr_gamma

    def forward(self, images, noise, timesteps, image_embeds, drop_image, text_embeds, hidden_states, mask):
        null = self.text_proj.null_image_embeddings(len(images)).to(image_embeds.dtype)
        image_embeds = torch.where(drop_image[:, None], null, image_embeds)
        context, time_embeds = self.text_proj(
            image_embeddings=image_embeds, prompt_embeds=text_embeds, text_encoder_hidden_states=hidden_states,
            do_classifier_free_guidance=False,
        )
        mask = F.pad(mask, (self.text_proj.clip_extra_context_tokens, 0), value=True)
        noisy = self.scheduler.add_noise(images, noise, timesteps)
        prediction = self.decoder(
            noisy, timesteps, encoder_hidden_states=context, class_labels=time_embeds, attention_mask=mask
        ).sample
        return losses.diffusion_loss(self.scheduler, prediction, images, noise, timesteps, self.snr_gamma)


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = common.make_accelerator(args)
    data = common.ImageTextData(args)
    clip = common.load_clip(args.pretrained_model_name_or_path, device=accelerator.device)
    cache = common.clip_embeddings(args, data, clip, accelerator)
    image_embeds, caption_index = cache["image_embeds"], cache["caption_index"]
    text_embeds, hidden, text_mask = cache["text_embeds"], cache["text_hidden_states"], cache["text_mask"]
    images = data.images_at(args.resolution)
    data.release_images()

    decoder = build_decoder(args)
    text_proj = UnCLIPTextProjModel(
        clip_embeddings_dim=image_embeds.shape[1], time_embed_dim=4 * args.block_out_channels[0],
        cross_attention_dim=args.cross_attention_dim,
    )
    model = DecoderTrainer(decoder, text_proj, decoder_scheduler(args), args.snr_gamma)
    accelerator.print(f"decoder: {common.count_parameters(decoder)} parameters at {args.resolution} px")

    def make_batch(indices, generator):
        n = len(indices)
        captions = caption_index[indices]
        captions = torch.where(torch.rand(n, generator=generator) < args.caption_drop_prob, 0, captions)
        return {
            "images": common.to_model_range(images[indices]),
            "noise": torch.randn((n, 3, args.resolution, args.resolution), generator=generator),
            "timesteps": torch.randint(0, args.num_train_timesteps, (n,), generator=generator),
            "image_embeds": image_embeds[indices],
            "drop_image": torch.rand(n, generator=generator) < args.image_drop_prob,
            "text_embeds": text_embeds[captions], "hidden_states": hidden[captions], "mask": text_mask[captions],
        }

    def pipeline(model: DecoderTrainer) -> UnCLIPDecoderPipeline:
        return UnCLIPDecoderPipeline(
            decoder=model.decoder, text_encoder=clip["text_encoder"], tokenizer=clip["tokenizer"],
            text_proj=model.text_proj, decoder_scheduler=decoder_scheduler(args),
        )

    val = data.validation_indices[: args.num_validation_images]

    def validate(model: DecoderTrainer, folder, step):
        pipe = pipeline(model)
        pipe.set_progress_bar_config(disable=True)
        generated = pipe(
            image_embeds=image_embeds[val].to(accelerator.device), prompt=[data.captions[i] for i in val.tolist()],
            decoder_num_inference_steps=args.validation_num_inference_steps,
            decoder_guidance_scale=args.validation_guidance_scale, output_type="pt",
            generator=torch.Generator().manual_seed(args.seed),
        ).images
        generated = (generated * 255).round().to(torch.uint8).cpu()
        path = os.path.join(folder, f"decoder-{step:06d}.png")
        common.save_grid([images[val], generated], path, scale=max(1, 128 // args.resolution))
        def encode(x):
            return common.encode_images(clip["image_encoder"], clip["feature_extractor"], x)

        return {
            "clip_cosine": F.cosine_similarity(encode(generated), image_embeds[val]).mean().item(),
            "clip_cosine_of_real_images": F.cosine_similarity(encode(images[val]), image_embeds[val]).mean().item(),
        }

    def save(model: DecoderTrainer, folder):
        pipe = pipeline(model)
        pipe.save_pretrained(folder)
        return pipe

    stage = common.Stage(
        model=model, make_batch=make_batch, num_examples=data.num_train, save=save,
        validate=validate if len(val) else None,
        description=f"An unCLIP decoder at {args.resolution} px ({common.count_parameters(decoder)} parameters).",
    )
    return common.train(args, stage, accelerator)


if __name__ == "__main__":
    main()
