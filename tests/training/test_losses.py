import pytest
import torch
from diffusers.training_utils import compute_snr

from training import losses, train_decoder, train_superres
from unclip_pipelines import UnCLIPScheduler


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 3, 8, 8, generator=generator) * 2 - 1
    noise = torch.randn(3, 3, 8, 8, generator=generator)
    return images, noise, torch.tensor([5, 400, 990])


@pytest.mark.parametrize("prediction_type", losses.PREDICTION_TYPES)
def test_the_target_of_each_prediction_type_has_zero_loss_and_recovers_x0(prediction_type):
    scheduler = UnCLIPScheduler(prediction_type=prediction_type, clip_sample=False)
    images, noise, timesteps = batch()
    target = {"epsilon": noise, "sample": images, "v_prediction": scheduler.get_velocity(images, noise, timesteps)}
    assert losses.diffusion_loss(scheduler, target[prediction_type], images, noise, timesteps).item() == 0
    assert losses.diffusion_loss(scheduler, target[prediction_type] + 1, images, noise, timesteps).item() == pytest.approx(1)
    # the scheduler turns that target back into x_0 (what sampling relies on)
    noisy = scheduler.add_noise(images, noise, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        x0 = scheduler._predicted_original_sample(target[prediction_type][i], noisy[i], scheduler.alphas_cumprod[t])
        torch.testing.assert_close(x0, images[i], atol=1e-3 if t < 900 or prediction_type != "epsilon" else 1.0, rtol=0)


@pytest.mark.parametrize(
    "prediction_type, weight",
    [("epsilon", lambda s: s.clamp(max=5) / s), ("v_prediction", lambda s: s.clamp(max=5) / (s + 1)),
     ("sample", lambda s: s.clamp(max=5))],
)
def test_min_snr_weights(prediction_type, weight):
    scheduler = UnCLIPScheduler(prediction_type=prediction_type)
    images, noise, timesteps = batch(1)
    prediction = torch.randn_like(images)
    plain = [losses.diffusion_loss(scheduler, prediction[i : i + 1], images[i : i + 1], noise[i : i + 1],
                                   timesteps[i : i + 1]) for i in range(3)]
    expected = (torch.stack(plain) * weight(compute_snr(scheduler, timesteps))).mean()
    weighted = losses.diffusion_loss(scheduler, prediction, images, noise, timesteps, snr_gamma=5.0)
    torch.testing.assert_close(weighted, expected)


def test_prediction_type_flag_reaches_the_saved_scheduler():
    common = ["--train_data_dir", "d", "--output_dir", "o"]
    args = train_decoder.parse_args(common + ["--pretrained_model_name_or_path", "c", "--prediction_type", "epsilon"])
    assert train_decoder.decoder_scheduler(args).config.prediction_type == "epsilon"
    args = train_superres.parse_args(common + ["--prediction_type", "sample"])
    assert train_superres.super_res_scheduler(args).config.prediction_type == "sample"
    assert train_superres.parse_args(common).prediction_type == "v_prediction"
    with pytest.raises(SystemExit):
        train_decoder.parse_args(common + ["--pretrained_model_name_or_path", "c", "--prediction_type", "velocity"])
