"""
Train unCLIP's x4 diffusion upsampler (paper §2.1): a convolution-only ``UNet2DModel`` that denoises the high-res
image given the low-res one, bicubic-upsampled and concatenated on the channels (exactly what the pipeline feeds it).

    accelerate launch training/train_superres.py --train_data_dir data/shapes --output_dir runs/superres \
        --resolution 128 --max_train_minutes 15

As in the paper, it trains on random crops of a quarter of the target size (128 -> 32 px crops) and runs on the full
image at sampling time (it has no attention, so it is size-agnostic), and the low-res conditioning is corrupted with
Gaussian blur (optionally noise) so the model is robust to the decoder's imperfect outputs. The low-res image is the
high-res one downsampled x4 and upsampled back with the pipeline's bicubic-antialias resize. Saves ``super_res_first``
(``sample_size`` = the full target, so the pipeline upsamples to it), optionally ``super_res_last`` (same weights),
and ``super_res_scheduler``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on a shared CPU

import math
import sys

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import common, losses
from unclip_pipelines import UnCLIPScheduler


def parse_args(argv=None):
    parser = common.build_parser(__doc__.split("\n\n")[0], max_train_steps=5000, validation_steps=500)
    model = parser.add_argument_group("model")
    model.add_argument("--resolution", type=int, default=128, help="the target (high-res) size")
    model.add_argument("--crop_size", type=int, help="training crop (default: resolution // 4)")
    model.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 128])
    model.add_argument("--layers_per_block", type=int, default=1)
    model.add_argument("--num_train_timesteps", type=int, default=1000)
    model.add_argument("--blur_prob", type=float, default=0.5, help="chance to blur the low-res conditioning")
    model.add_argument("--blur_sigma", type=float, nargs=2, default=[0.4, 0.8], help="range, in low-res pixels")
    model.add_argument("--lowres_noise_std", type=float, default=0.0, help="max std of noise added to the low-res")
    losses.add_prediction_arguments(model)
    model.add_argument("--super_res_last", choices=["none", "same"], default="none", help="Karlo's last-step model")
    val = parser.add_argument_group("validation")
    val.add_argument("--num_validation_images", type=int, default=8)
    val.add_argument("--validation_num_inference_steps", type=int, default=7)
    return common.parse_args(parser, argv)


def build_unet(args) -> UNet2DModel:
    channels = tuple(args.block_out_channels)
    return UNet2DModel(
        sample_size=args.resolution, in_channels=6, out_channels=3, layers_per_block=args.layers_per_block,
        block_out_channels=channels, down_block_types=("ResnetDownsampleBlock2D",) * len(channels),
        up_block_types=("ResnetUpsampleBlock2D",) * len(channels), add_attention=False,
        resnet_time_scale_shift="scale_shift", norm_num_groups=min(32, channels[0]),
    )


def super_res_scheduler(args) -> UnCLIPScheduler:
    return UnCLIPScheduler(
        num_train_timesteps=args.num_train_timesteps, variance_type="fixed_small_log", prediction_type=args.prediction_type,
        clip_sample=True, clip_sample_range=1.0, beta_schedule="squaredcos_cap_v2",
    )


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own ``sigma`` (pixels; 0 = unchanged), separable, reflect-padded."""
    radius = max(1, math.ceil(3 * float(sigma.max())))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(x[None] ** 2) / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(images.shape[1], 0)  # (B*C, k)
    b, c, h, w = images.shape
    out = F.pad(images.reshape(1, b * c, h, w), (radius,) * 4, mode="reflect")
    out = F.conv2d(out, kernel[:, None, None, :], groups=b * c)
    out = F.conv2d(out, kernel[:, None, :, None], groups=b * c)
    return out.reshape(b, c, h, w)


def degrade(high: torch.Tensor, args, generator: torch.Generator | None) -> torch.Tensor:
    """High-res [-1, 1] images -> the upsampler's conditioning: x4 down, blur/noise (training), bicubic up."""
    low = common.upscale(high, (high.shape[-1] // 4,) * 2)
    if generator is not None:
        n = len(high)
        low_sigma, high_sigma = args.blur_sigma
        sigma = low_sigma + (high_sigma - low_sigma) * torch.rand(n, generator=generator)
        sigma = torch.where(torch.rand(n, generator=generator) < args.blur_prob, sigma, torch.zeros(n))
        low = gaussian_blur(low, sigma)
        if args.lowres_noise_std:
            std = args.lowres_noise_std * torch.rand(n, 1, 1, 1, generator=generator)
            low = low + std * torch.randn(low.shape, generator=generator)
        low = low.clamp(-1, 1)
    return common.upscale(low, tuple(high.shape[-2:]))


class SuperResTrainer(torch.nn.Module):
    def __init__(self, unet: UNet2DModel, scheduler: UnCLIPScheduler, snr_gamma: float | None = None):
        super().__init__()
        self.unet, self.scheduler, self.snr_gamma = unet, scheduler, snr_gamma

    def forward(self, high, upscaled, noise, timesteps):
        noisy = self.scheduler.add_noise(high, noise, timesteps)
        prediction = self.unet(torch.cat([noisy, upscaled], dim=1), timesteps).sample
        return losses.diffusion_loss(self.scheduler, prediction, high, noise, timesteps, self.snr_gamma)


@torch.no_grad()
def upsample(unet, scheduler, upscaled: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
    """The pipeline's super-resolution loop (no guidance)."""
    scheduler.set_timesteps(steps)
    device = next(unet.parameters()).device
    upscaled = upscaled.to(device)
    sample = torch.randn(upscaled.shape, generator=generator).to(device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        output = unet(torch.cat([sample, upscaled], dim=1), t).sample
        sample = scheduler.step(output, t, sample, generator=generator).prev_sample
    return sample.cpu()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.float() - b.float()) / 255).pow(2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return (-10 * torch.log10(mse)).mean().item()


def main(argv=None) -> dict:
    args = parse_args(argv)
    crop = args.crop_size or args.resolution // 4
    accelerator = common.make_accelerator(args)
    data = common.ImageTextData(args)
    images = data.images_at(args.resolution)
    unet = build_unet(args)
    model = SuperResTrainer(unet, super_res_scheduler(args), args.snr_gamma)
    accelerator.print(f"upsampler: {common.count_parameters(unet)} parameters, {crop} px crops of {args.resolution} px")

    def make_batch(indices, generator):
        n = len(indices)
        high = common.to_model_range(images[indices])
        upscaled = degrade(high, args, generator)
        corners = torch.randint(0, args.resolution - crop + 1, (n, 2), generator=generator).tolist()

        def pick(x):
            return torch.stack([x[i, :, top : top + crop, left : left + crop] for i, (top, left) in enumerate(corners)])

        return {
            "high": pick(high), "upscaled": pick(upscaled),
            "noise": torch.randn((n, 3, crop, crop), generator=generator),
            "timesteps": torch.randint(0, args.num_train_timesteps, (n,), generator=generator),
        }

    val = data.validation_indices[: args.num_validation_images]

    def validate(model: SuperResTrainer, folder, step):
        truth = images[val]
        upscaled = degrade(common.to_model_range(truth), args, None)
        generated = upsample(
            model.unet, super_res_scheduler(args), upscaled, args.validation_num_inference_steps,
            torch.Generator().manual_seed(args.seed),
        )
        generated, upscaled = common.from_model_range(generated), common.from_model_range(upscaled)
        common.save_grid([upscaled, generated, truth], os.path.join(folder, f"superres-{step:06d}.png"))
        return {"psnr": psnr(generated, truth), "psnr_bicubic": psnr(upscaled, truth)}

    def save(model: SuperResTrainer, folder):
        model.unet.save_pretrained(os.path.join(folder, "super_res_first"))
        if args.super_res_last == "same":
            model.unet.save_pretrained(os.path.join(folder, "super_res_last"))
        super_res_scheduler(args).save_pretrained(os.path.join(folder, "super_res_scheduler"))

    stage = common.Stage(
        model=model, make_batch=make_batch, num_examples=data.num_train, save=save,
        validate=validate if len(val) else None,
        description=f"An unCLIP x4 upsampler to {args.resolution} px ({common.count_parameters(unet)} parameters).",
    )
    return common.train(args, stage, accelerator)


if __name__ == "__main__":
    main()
