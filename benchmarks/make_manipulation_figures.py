"""The figures and numbers of docs/manipulations.md, for any unCLIP model folder, measured on the Shapes World.

    python benchmarks/make_manipulation_figures.py [--model DIR] [--out docs/figures] [--num-images 8] [--quick]

The folder must load as ``UnCLIPPipeline`` with a CLIP ``image_encoder`` / ``feature_extractor`` (the embedded model
does; default: ``unclip_pipelines.EMBEDDED_MODEL``). Writes one PNG per feature into ``--out``
(``manipulation_<feature>.png``) and prints the measured numbers, judged by ``unclip_pipelines.shapes``:

- inversion: PSNR of the η = 0 reconstructions at the output resolution, at the decoder's (the final image
  downsampled) and of the decoder stage's own output (with the
  manipulations' defaults: no decoder guidance, 25 upsampler steps; and, for comparison, with the model's text-to-image
  decoder guidance and upsampler steps), judge accuracy on the
  source renders, their reconstructions and their η = 1 variations, CLIP cosine of the variations to the source;
- interpolation: judge accuracy of the end frames on the two captions (fixed and slerped noise);
- text diff: success rate (the last frame is judged correct on the target caption, a colour swap) per max angle;
- PCA probe: judge accuracy of the decoded k-component reconstructions, per k;
- best-of-N prior and CLIP re-ranking: judge accuracy on evaluation prompts with N = 1 vs 2, and of the top-ranked
  image vs all images;
- inpainting: success rate of recolouring one object of a pair through a mask, and the largest change outside it;
- text diff "a red circle" -> "a blue circle" on red-circle renders (default ``max_angle``): judged a blue circle,
  colour and shape separately.

``--only SECTION ...`` runs some of them (the random draws of a section do not depend on the ones after it).

Sampling settings come from the folder's ``sampling_defaults.json`` when present (decoder steps and guidance); the
sections that invert images (variations, interpolation, text diffs, PCA probe) decode with the pipeline's manipulation
defaults instead (``--inversion-guidance-scale``, ``--inversion-decoder-steps``, ``--inversion-super-res-steps``).
``--quick`` shrinks everything to a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import PIL.Image
import torch

from unclip_pipelines import (
    UnCLIPImageVariationPipeline,
    UnCLIPInpaintPipeline,
    UnCLIPPCA,
    UnCLIPPipeline,
    probe_pca_grid,
)
from unclip_pipelines.pipelines.image_encoding import image_to_tensor
from unclip_pipelines.pipelines.stages import upscale
from unclip_pipelines.shapes import (
    COLOURS,
    HELD_OUT_PAIRS,
    judge_image,
    render_scene,
    sample_eval_prompts,
    sample_scene,
)


def parse_args(argv=None):
    import unclip_pipelines
    from unclip_pipelines.pipelines.inversion import (
        DEFAULT_FIXED_POINT_ITERATIONS,
        INVERSION_DECODER_STEPS,
        INVERSION_GUIDANCE_SCALE,
        INVERSION_SUPER_RES_STEPS,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=unclip_pipelines.EMBEDDED_MODEL, help="model folder")
    parser.add_argument("--out", default=os.path.join("docs", "figures"), help="folder for the PNGs")
    parser.add_argument("--num-images", type=int, default=8, help="images (prompts) per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--fixed-point-iterations", type=int, default=DEFAULT_FIXED_POINT_ITERATIONS, help="inversion refinements"
    )
    parser.add_argument("--inversion-guidance-scale", type=float, default=INVERSION_GUIDANCE_SCALE,
                        help="decoder guidance of the sections that invert images")
    parser.add_argument("--inversion-decoder-steps", type=int, default=INVERSION_DECODER_STEPS,
                        help="decoder steps of the sections that invert images")
    parser.add_argument("--inversion-super-res-steps", type=int, default=INVERSION_SUPER_RES_STEPS,
                        help="upsampler steps of the sections that invert images")
    parser.add_argument("--inpaint-resample-steps", type=int, default=6,
                        help="RePaint resampling of every inpainting step (6: 18 of 22 edits right, 3: 13 of 22)")
    parser.add_argument("--save-pca", action="store_true", help="save the fitted PCA into <model>/pca")
    parser.add_argument("--quick", action="store_true", help="a few steps and images: a smoke run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these measurements (and figures)")
    return parser.parse_args(argv)


SECTIONS = ("variations", "interpolation", "text_diff", "pca", "best_of_n_rerank", "inpaint", "text_diff_red_blue")


# --- helpers ---------------------------------------------------------------------------------------------------------


def grid(rows: list[list[PIL.Image.Image]], size: int) -> PIL.Image.Image:
    """Rows of images, each resized to ``size``, on a white canvas (ragged rows are padded)."""
    columns = max(len(row) for row in rows)
    canvas = PIL.Image.new("RGB", (columns * size, len(rows) * size), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            canvas.paste(image.convert("RGB").resize((size, size)), (c * size, r * size))
    return canvas


def to_pil(images) -> list[PIL.Image.Image]:
    if isinstance(images, list):
        return images
    return [PIL.Image.fromarray((x * 255).round().astype(np.uint8)) for x in images]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decoder_stage_psnr(variation, source: PIL.Image.Image, inversion) -> float:
    """PSNR of the decoder's own η = 0 output from the inverted x_T against the source at the decoder's resolution
    (resized as the inversion resized it), before any upsampler."""
    text = variation.encode_prompt([""], variation._execution_device, 1, inversion.decoder_guidance_scale > 1)
    output = variation.run_decoder(inversion.image_embeds, text, inversion.decoder_num_inference_steps,
                                   inversion.decoder_guidance_scale, latents=inversion.decoder_latents, eta=0.0)
    target = upscale(image_to_tensor(source) * 2 - 1, variation.decoder_sample_size).clamp(-1, 1)
    mse = ((output.float().cpu() - target) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def accuracy(images, captions) -> float:
    return float(np.mean([judge_image(image, caption).correct for image, caption in zip(images, captions)]))


def recolour(caption: str, old: str, new: str, nth: int = 0) -> str:
    words = caption.split(" ")
    hits = [i for i, w in enumerate(words) if w == old]
    words[hits[nth]] = new
    return " ".join(words)


def other_colour(rng, colour: str, shape: str) -> str:
    choices = [c for c in COLOURS if c != colour and (c, shape) not in HELD_OUT_PAIRS]
    return choices[int(rng.integers(len(choices)))]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


# --- the features ----------------------------------------------------------------------------------------------------


def inversion_and_variations(variation, scenes, size, settings, args, results, generation):
    sources = [render_scene(scene, size=size) for scene in scenes]
    inversions = [variation.invert(image, fixed_point_iterations=args.fixed_point_iterations, **settings)
                  for image in sources]
    reconstructions = [variation(**inv.call_kwargs(), output_type="pil").images[0] for inv in inversions]
    variations = [[variation(**inv.call_kwargs(eta=eta), generator=seeded(args.seed + k), output_type="pil").images[0]
                   for eta, k in ((0.5, 0), (1.0, 1), (1.0, 2))] for inv in inversions]
    # the same with the model's text-to-image decoding settings (its guidance, few upsampler steps), for comparison
    generation = [variation.invert(image, fixed_point_iterations=args.fixed_point_iterations, **generation)
                  for image in sources]
    generation = [variation(**inv.call_kwargs(), output_type="pil").images[0] for inv in generation]
    low = variation.output_sizes[0]
    captions = [scene.caption for scene in scenes]
    source_embeds = torch.cat([inv.image_embeds for inv in inversions])
    variation_embeds = variation.encode_pixels([row[1] for row in variations])
    results["inversion"] = {
        "psnr_output_resolution_db": float(np.mean([psnr(np.asarray(a), np.asarray(b))
                                                    for a, b in zip(sources, reconstructions)])),
        "psnr_output_resolution_db_generation_settings": float(np.mean([psnr(np.asarray(a), np.asarray(b))
                                                                        for a, b in zip(sources, generation)])),
        "judge_accuracy_reconstructions_generation_settings": accuracy(generation, [s.caption for s in scenes]),
        "psnr_decoder_output_db": float(np.mean([decoder_stage_psnr(variation, source, inversion)
                                                 for source, inversion in zip(sources, inversions)])),
        "psnr_decoder_resolution_db": float(np.mean([
            psnr(np.asarray(a.resize(low, PIL.Image.BICUBIC)), np.asarray(b.resize(low, PIL.Image.BICUBIC)))
            for a, b in zip(sources, reconstructions)])),
        "judge_accuracy_sources": accuracy(sources, captions),
        "judge_accuracy_reconstructions": accuracy(reconstructions, captions),
        "judge_accuracy_variations_eta1": accuracy([row[1] for row in variations], captions),
        "clip_cosine_variation_to_source": torch.nn.functional.cosine_similarity(
            variation_embeds.float(), source_embeds.float()).mean().item(),
    }
    rows = [[s, r, *v] for s, r, v in zip(sources, reconstructions, variations)]
    return grid(rows, size), sources, inversions


def interpolation(variation, sources, inversions, scenes, settings, args, results, size):
    rows, ends = [], {"fixed": [], "slerp": []}
    for i in range(0, len(sources) - 1, 2):
        for noise in ("fixed", "slerp"):
            a, b = (inversions[i], inversions[i + 1]) if noise == "slerp" else (sources[i], sources[i + 1])
            frames = to_pil(variation.interpolate(a, b, num_frames=5, noise=noise, generator=seeded(args.seed),
                                                  output_type="np", **settings).images)
            rows.append([sources[i], *frames, sources[i + 1]])
            ends[noise] += [judge_image(frames[0], scenes[i].caption).correct,
                            judge_image(frames[-1], scenes[i + 1].caption).correct]
    results["interpolation"] = {f"judge_accuracy_end_frames_{k}": float(np.mean(v)) for k, v in ends.items() if v}
    return grid(rows, size)


def text_diffs(variation, settings, args, results, size, rng):
    rows, success = [], {}
    angles = (0.25, 0.5, 1.0)
    for _ in range(args.num_images):
        while True:
            scene = sample_scene(rng, "eval", category="single")
            colour, shape = scene.objects[0].colour, scene.objects[0].shape
            if (colour, shape) not in HELD_OUT_PAIRS:
                break
        target = recolour(scene.caption, colour, other_colour(rng, colour, shape))
        image = render_scene(scene, size=size)
        inversion = variation.invert(image, fixed_point_iterations=args.fixed_point_iterations, **settings)
        for angle in angles:
            frames = to_pil(variation.text_diff(inversion, scene.caption, target, num_frames=5, max_angle=angle,
                                                output_type="np").images)
            success.setdefault(angle, []).append(judge_image(frames[-1], target).correct)
            if angle == 0.5:
                rows.append([image, *frames])
    results["text_diff"] = {f"success_rate_max_angle_{a}": float(np.mean(v)) for a, v in success.items()}
    return grid(rows, size)


def text_diff_red_to_blue(variation, settings, args, results, size, rng):
    """Issue 4's acceptance case: renders of a red circle, text diff "a red circle" -> "a blue circle"."""
    rows, judged = [], []
    while len(judged) < args.num_images:
        scene = sample_scene(rng, "eval", category="single")
        if (scene.objects[0].colour, scene.objects[0].shape) != ("red", "circle"):
            continue
        image = render_scene(scene, size=size)
        inversion = variation.invert(image, fixed_point_iterations=args.fixed_point_iterations, **settings)
        frames = to_pil(variation.text_diff(inversion, "a red circle", "a blue circle", output_type="np").images)
        judged.append(judge_image(frames[-1], "a blue circle"))
        rows.append([image, *frames])
    results["text_diff_red_circle_to_blue"] = {
        "images": len(judged),
        "judged_a_blue_circle": float(np.mean([j.correct for j in judged])),
        "colour_correct": float(np.mean([j.colour for j in judged])),
        "shape_kept": float(np.mean([j.shape for j in judged])),
    }
    return grid(rows, size)


def pca_probe(variation, sources, scenes, settings, args, results, size, rng):
    pca_dir = os.path.join(args.model, "pca")
    if os.path.isdir(pca_dir):
        pca = UnCLIPPCA.from_pretrained(args.model, subfolder="pca")
    else:
        fit_count = 64 if args.quick else 512
        fit_images = [render_scene(sample_scene(rng, "train"), size=size) for _ in range(fit_count)]
        embeds = torch.cat([variation.encode_pixels(fit_images[i : i + 64]) for i in range(0, fit_count, 64)])
        pca = UnCLIPPCA.fit(embeds.float().cpu(), num_components=min(fit_count - 1, embeds.shape[-1]))
        if args.save_pca:
            pca.save_pretrained(pca_dir)
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, pca.num_components) if k <= pca.num_components})
    shown = sources[: min(4, len(sources))]
    figure = probe_pca_grid(variation, shown, ks, pca, generator=seeded(args.seed), **settings)
    accuracies = {}
    embeds = variation.encode_pixels(sources)
    for k in ks:
        decoded = to_pil(variation(image_embeddings=pca.to(embeds.device).reconstruct(embeds, k), decoder_eta=0.0,
                                   super_res_eta=0.0, generator=seeded(args.seed), output_type="np",
                                   **settings).images)
        accuracies[f"judge_accuracy_k_{k}"] = accuracy(decoded, [s.caption for s in scenes])
    results["pca_probe"] = {"num_components": pca.num_components, **accuracies}
    return figure


def best_of_n_and_rerank(pipe, settings, args, results, size):
    prompts = sample_eval_prompts(args.num_images, seed=args.seed)
    generators = lambda: [seeded(args.seed + i) for i in range(len(prompts) * 4)]  # noqa: E731
    prior = dict(prior_num_inference_steps=settings["prior_num_inference_steps"],
                 decoder_num_inference_steps=settings["decoder_num_inference_steps"],
                 super_res_num_inference_steps=settings["super_res_num_inference_steps"])
    by_n = {}
    for n in (1, 2):
        images = pipe(prompts, num_images_per_prompt=4, prior_num_candidates=n, generator=generators(),
                      output_type="pil", **prior).images
        by_n[n] = images
    ranked = pipe(prompts, num_images_per_prompt=4, rerank=True, generator=generators(), output_type="pil", **prior)
    captions = [p for p in prompts for _ in range(4)]
    top = ranked.images[::4]
    results["best_of_n"] = {f"judge_accuracy_N_{n}": accuracy(images, captions) for n, images in by_n.items()}
    results["rerank"] = {"judge_accuracy_all": accuracy(ranked.images, captions),
                         "judge_accuracy_top1": accuracy(top, prompts)}
    rows = [[*by_n[1][i * 4 : i * 4 + 4], *ranked.images[i * 4 : i * 4 + 4]] for i in range(min(4, len(prompts)))]
    return grid(rows, size)


def inpainting(pipe, settings, args, results, size, rng):
    inpaint = UnCLIPInpaintPipeline(**pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    rows, success, leaks = [], [], []
    for i in range(args.num_images):
        while True:
            scene = sample_scene(rng, "eval", category="pair")
            obj = scene.objects[1]
            if all((c, s) not in HELD_OUT_PAIRS for c, s in ((o.colour, o.shape) for o in scene.objects)):
                break
        new = other_colour(rng, obj.colour, obj.shape)
        if new == scene.objects[0].colour and obj.shape == scene.objects[0].shape:
            continue
        target = recolour(scene.caption, obj.colour, new, nth=1 if scene.objects[0].colour == obj.colour else 0)
        image = render_scene(scene, size=size)
        mask = np.zeros((size, size), np.uint8)
        x0, y0, x1, y1 = (np.array(obj.box) + np.array([-0.04, -0.04, 0.04, 0.04])).clip(0, 1) * size
        mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = 255
        out = inpaint(target, image, PIL.Image.fromarray(mask), generator=seeded(args.seed + i), output_type="pil",
                      resample_steps=1 if args.quick else args.inpaint_resample_steps, **settings).images[0]
        success.append(judge_image(out, target).correct)
        keep = mask == 0
        leaks.append(int(np.abs(np.asarray(out, np.int16) - np.asarray(image, np.int16))[keep].max()))
        rows.append([image, PIL.Image.fromarray(mask), out])
    results["inpainting"] = {"resample_steps": 1 if args.quick else args.inpaint_resample_steps,
                             "judged": len(success),
                             "success_rate": float(np.mean(success)) if success else float("nan"),
                             "max_unmasked_change_0_255": max(leaks) if leaks else 0}
    return grid(rows, size)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    pipe = UnCLIPPipeline.from_pretrained(args.model).to(args.device)
    pipe.require_image_encoder("make_manipulation_figures.py")
    pipe.set_progress_bar_config(disable=True)
    variation = UnCLIPImageVariationPipeline(**{k: v for k, v in pipe.components.items()
                                                if k not in ("prior", "prior_scheduler")})
    variation.set_progress_bar_config(disable=True)
    defaults_path = os.path.join(args.model, "sampling_defaults.json")
    defaults = json.load(open(defaults_path, encoding="utf-8")) if os.path.isfile(defaults_path) else {}
    settings = {
        "prior_num_inference_steps": defaults.get("prior_num_inference_steps", 25),
        "decoder_num_inference_steps": defaults.get("decoder_num_inference_steps", 25),
        "super_res_num_inference_steps": defaults.get("super_res_num_inference_steps", 7),
        "decoder_guidance_scale": defaults.get("decoder_guidance_scale", 8.0),
    }
    if args.quick:
        settings.update(prior_num_inference_steps=3, decoder_num_inference_steps=4, super_res_num_inference_steps=2)
        args.num_images = min(args.num_images, 2)
        args.fixed_point_iterations = min(args.fixed_point_iterations, 1)
    generation = {k: v for k, v in settings.items() if k != "prior_num_inference_steps"}
    decode = {**generation, "decoder_guidance_scale": args.inversion_guidance_scale,
              "decoder_num_inference_steps": 4 if args.quick else args.inversion_decoder_steps,
              "super_res_num_inference_steps": 2 if args.quick else args.inversion_super_res_steps}
    size = pipe.output_sizes[-1][0]
    rng = np.random.default_rng(args.seed)
    scenes = [sample_scene(rng, "eval") for _ in range(max(2, args.num_images))]
    os.makedirs(args.out, exist_ok=True)
    results: dict = {"model": args.model, "settings": settings, "manipulation_settings": decode,
                     "fixed_point_iterations": args.fixed_point_iterations}

    figures = {}
    start = time.time()
    wanted = set(args.only or SECTIONS)
    if wanted & {"variations", "interpolation", "pca"}:
        figures["variations"], sources, inversions = inversion_and_variations(variation, scenes, size, decode, args,
                                                                               results, generation)
    if "interpolation" in wanted:
        figures["interpolation"] = interpolation(variation, sources, inversions, scenes, decode, args, results, size)
    if "text_diff" in wanted:
        figures["text_diff"] = text_diffs(variation, decode, args, results, size, rng)
    if "pca" in wanted:
        figures["pca"] = pca_probe(variation, sources, scenes, decode, args, results, size, rng)
    if "best_of_n_rerank" in wanted:
        figures["best_of_n_rerank"] = best_of_n_and_rerank(pipe, settings, args, results, size)
    if "inpaint" in wanted:
        figures["inpaint"] = inpainting(pipe, settings, args, results, size, rng)
    if "text_diff_red_blue" in wanted:
        figures["text_diff_red_blue"] = text_diff_red_to_blue(variation, decode, args, results, size, rng)
    for name, figure in figures.items():
        path = os.path.join(args.out, f"manipulation_{name}.png")
        figure.save(path)
        print(f"wrote {path}")
    results["seconds"] = round(time.time() - start, 1)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
