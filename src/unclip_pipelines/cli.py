"""The ``unclip`` command line: generate, evaluate on the Shapes World, probe the CLIP latent, make a tiny model."""

from __future__ import annotations

import argparse
import os
import sys

SCHEDULERS = {
    "unclip": "unclip_pipelines:UnCLIPScheduler",
    "ddim": "diffusers:DDIMScheduler",
    "dpm": "diffusers:DPMSolverMultistepScheduler",
    "euler": "diffusers:EulerDiscreteScheduler",
    "ddpm": "diffusers:DDPMScheduler",
}


def default_model() -> str | None:
    """The embedded Shapes World model when the package ships one."""
    try:
        from . import EMBEDDED_MODEL  # type: ignore[attr-defined]
    except ImportError:
        return None
    return EMBEDDED_MODEL if os.path.isfile(os.path.join(EMBEDDED_MODEL, "model_index.json")) else None


def _scheduler_class(name: str):
    import importlib

    module, cls = SCHEDULERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_pipeline(model: str | None, scheduler: str = "unclip", device: str | None = None):
    """Load an :class:`UnCLIPPipeline` and swap every stage's scheduler to ``scheduler`` (keeping its noise schedule)."""
    import torch

    from .pipelines import UnCLIPPipeline

    model = model or default_model()
    if model is None:
        raise SystemExit(
            "No model given and no embedded model is installed: pass --model DIR_OR_REPO "
            "(e.g. a folder made by `unclip create-tiny-model DIR`)."
        )
    pipe = UnCLIPPipeline.from_pretrained(model)
    if scheduler != "unclip":
        cls = _scheduler_class(scheduler)
        for name in ("prior_scheduler", "decoder_scheduler", "super_res_scheduler"):
            current = getattr(pipe, name, None)
            if current is not None:
                setattr(pipe, name, cls.from_config(current.config))
    return pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="pipeline folder or Hub repo id (default: the embedded model)")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="unclip", help="sampler for every stage")
    parser.add_argument("--prior-steps", type=int)
    parser.add_argument("--decoder-steps", type=int)
    parser.add_argument("--super-res-steps", type=int)
    parser.add_argument("--prior-guidance-scale", type=float)
    parser.add_argument("--decoder-guidance-scale", type=float)
    parser.add_argument(
        "--prior-num-candidates", type=int, help="best-of-N prior: keep the embedding closest to the text (paper: 2)"
    )


def _generate_kwargs(args, pipe=None) -> dict:
    """The sampling flags given on the command line, over the model's stored ``sampling_defaults``."""
    kwargs = {
        "prior_num_inference_steps": args.prior_steps,
        "decoder_num_inference_steps": args.decoder_steps,
        "super_res_num_inference_steps": args.super_res_steps,
        "prior_guidance_scale": args.prior_guidance_scale,
        "decoder_guidance_scale": args.decoder_guidance_scale,
        "num_images_per_prompt": getattr(args, "num_images", None),
        "prior_num_candidates": args.prior_num_candidates,
    }
    defaults = dict(getattr(pipe, "sampling_defaults", None) or {})
    return {**defaults, **{key: value for key, value in kwargs.items() if value is not None}}


def cmd_generate(args) -> int:
    import torch

    if (args.prompt is None) == (args.prompts_file is None):
        raise SystemExit("Give a PROMPT or --prompts-file FILE (one prompt a line), not both.")
    if args.prompts_file is not None and args.output_dir is None:
        raise SystemExit("--prompts-file needs --output-dir DIR for the images (named NNNN_K.png).")
    pipe = load_pipeline(args.model, args.scheduler)
    kwargs = _generate_kwargs(args, pipe)

    if args.prompt is not None:
        generator = torch.Generator("cpu").manual_seed(args.seed)
        images = pipe(args.prompt, generator=generator, **kwargs).images
        stem, ext = os.path.splitext(args.output)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        for k, image in enumerate(images):
            path = args.output if len(images) == 1 else f"{stem}_{k}{ext or '.png'}"
            image.save(path)
            print(path)
        return 0

    with open(args.prompts_file, encoding="utf-8") as handle:
        prompts = [line.strip() for line in handle if line.strip()]
    if not prompts:
        raise SystemExit(f"{args.prompts_file} holds no prompts (one prompt a line).")
    os.makedirs(args.output_dir, exist_ok=True)
    pipe.set_progress_bar_config(disable=True)
    from tqdm.auto import tqdm

    for index, prompt in enumerate(tqdm(prompts, desc="prompts")):
        generator = torch.Generator("cpu").manual_seed(args.seed + index)
        for k, image in enumerate(pipe(prompt, generator=generator, **kwargs).images):
            image.save(os.path.join(args.output_dir, f"{index:04d}_{k}.png"))
    print(f"wrote {len(prompts)} x {args.num_images} images to {args.output_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from .shapes import sample_eval_prompts
    from .shapes.benchmark import run_evaluation

    if args.prompts_file:
        with open(args.prompts_file, encoding="utf-8") as handle:
            prompts = [line.strip() for line in handle if line.strip()]
    else:
        prompts = sample_eval_prompts(args.num_prompts, seed=args.prompt_seed)
    pipe = load_pipeline(args.model, args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    kwargs = _generate_kwargs(args, pipe)
    kwargs.pop("num_images_per_prompt", None)
    report = run_evaluation(
        pipe,
        prompts,
        images_per_prompt=args.images_per_prompt,
        seed=args.seed,
        batch_size=args.batch_size,
        output_dir=args.output_dir,
        save_images=args.save_images,
        conditioning=args.conditioning,
        **kwargs,
    )
    print(report.to_markdown())
    print(f"wrote {args.output_dir}/evaluation.json and evaluation.md")
    return 0


def _probe_images(args) -> list:
    """The images of ``unclip probe-pca``: files, or Shapes World renders."""
    from PIL import Image

    if args.images:
        return [Image.open(path).convert("RGB") for path in args.images]
    import numpy as np

    from .shapes import render_scene, sample_scene

    rng = np.random.default_rng(args.seed)
    return [render_scene(sample_scene(rng, mode="eval")) for _ in range(args.num_scenes)]


def cmd_probe_pca(args) -> int:
    import numpy as np
    import torch

    from .manipulations import UnCLIPPCA
    from .pipelines import UnCLIPImageVariationPipeline, probe_pca_grid
    from .shapes import render_scene, sample_scene

    model = args.model or default_model()
    if model is None:
        raise SystemExit("No model given and no embedded model is installed: pass --model DIR_OR_REPO.")
    pipe = UnCLIPImageVariationPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    if args.pca:
        pca = UnCLIPPCA.from_pretrained(args.pca)
    elif os.path.isfile(os.path.join(model, "pca", "config.json")):
        pca = UnCLIPPCA.from_pretrained(model, subfolder="pca")
        print(f"using the PCA saved with the model ({model}/pca)")
    else:
        rng = np.random.default_rng(args.seed + 1)
        fit_images = [render_scene(sample_scene(rng)) for _ in range(args.fit_scenes)]
        with torch.no_grad():
            embeds = torch.cat([pipe.encode_image(fit_images[i : i + 64]) for i in range(0, len(fit_images), 64)])
        pca = UnCLIPPCA.fit(embeds)
        print(f"fitted a {pca.num_components}-component PCA on {len(fit_images)} Shapes World renders")
    if args.save_pca:
        pca.save_pretrained(args.save_pca)
        print(f"saved the PCA to {args.save_pca} (load it with UnCLIPPCA.from_pretrained)")
    settings = {k: v for k, v in getattr(pipe, "sampling_defaults", {}).items() if not k.startswith("prior")}
    if args.decoder_steps is not None:
        settings["decoder_num_inference_steps"] = args.decoder_steps
    if args.decoder_guidance_scale is not None:
        settings["decoder_guidance_scale"] = args.decoder_guidance_scale
    grid = probe_pca_grid(
        pipe, _probe_images(args), args.ks, pca, generator=torch.Generator().manual_seed(args.seed), **settings
    )
    grid.save(args.output)
    print(f"wrote {args.output}: rows = images, columns = source then k = {', '.join(map(str, args.ks))}")
    return 0


def cmd_create_tiny_model(args) -> int:
    from .pipelines import UnCLIPImageVariationPipeline, UnCLIPPipeline
    from .tiny import tiny_unclip_components

    cls = UnCLIPImageVariationPipeline if args.image_variation else UnCLIPPipeline
    pipe = cls(**tiny_unclip_components(seed=args.seed, image_variation=args.image_variation))
    pipe.save_pretrained(args.output_dir)
    print(f"wrote a tiny RANDOM (untrained) {cls.__name__} to {args.output_dir}: its images are noise-like.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unclip", description="unCLIP (DALL·E 2) pipelines for diffusers.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="text -> image with an UnCLIPPipeline")
    gen.add_argument("prompt", nargs="?", help="the prompt")
    gen.add_argument("--prompts-file", help="a file with one prompt a line (instead of PROMPT)")
    gen.add_argument("--output-dir", help="folder for --prompts-file images, named NNNN_K.png")
    gen.add_argument("--seed", type=int, default=0, help="random seed (prompt i of a file uses seed + i)")
    gen.add_argument("--num-images", type=int, default=1, help="images per prompt")
    gen.add_argument("--output", default="unclip.png", help="output file for PROMPT (K > 1 adds _K)")
    _add_sampling_flags(gen)
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("evaluate", help="score a model on Shapes World prompts with the judge")
    ev.add_argument("--prompts-file", help="one prompt a line (default: --num-prompts sampled from the grammar)")
    ev.add_argument("--num-prompts", type=int, default=200)
    ev.add_argument("--prompt-seed", type=int, default=0, help="seed of the sampled prompt set")
    ev.add_argument("--images-per-prompt", type=int, default=4)
    ev.add_argument("--seed", type=int, default=0, help="seed of the images (per-image generators)")
    ev.add_argument("--batch-size", type=int, default=16, help="images generated per pipeline call")
    ev.add_argument("--output-dir", default="evaluation", help="writes evaluation.json and evaluation.md here")
    ev.add_argument("--save-images", action="store_true")
    ev.add_argument(
        "--conditioning",
        choices=["prior", "text_embedding", "caption_only"],
        default="prior",
        help="the decoder's image embedding: the prior's sample, the text embedding, or none (paper §5.1)",
    )
    _add_sampling_flags(ev)
    ev.set_defaults(func=cmd_evaluate)

    probe = sub.add_parser("probe-pca", help="decode PCA reconstructions of CLIP image embeddings (paper §4, Fig. 7)")
    probe.add_argument("--model", help="pipeline folder with a CLIP image encoder (default: the embedded model)")
    probe.add_argument("--images", nargs="+", help="image files, one row each (default: Shapes World renders)")
    probe.add_argument("--num-scenes", type=int, default=4, help="rows of renders when no --images are given")
    probe.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="components kept per column")
    probe.add_argument("--pca", help="a saved UnCLIPPCA folder (default: MODEL/pca, else fitted on renders)")
    probe.add_argument("--fit-scenes", type=int, default=1024, help="renders to fit the PCA on when none is saved")
    probe.add_argument("--save-pca", help="save the PCA used here (safetensors)")
    probe.add_argument("--decoder-steps", type=int)
    probe.add_argument("--decoder-guidance-scale", type=float)
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--output", default="pca_probe.png")
    probe.set_defaults(func=cmd_probe_pca)

    tiny = sub.add_parser("create-tiny-model", help="write a tiny random pipeline (for smoke tests only)")
    tiny.add_argument("output_dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--image-variation", action="store_true")
    tiny.set_defaults(func=cmd_create_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
