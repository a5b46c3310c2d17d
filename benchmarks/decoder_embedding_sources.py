"""Is it the prior or the decoder? Decode three image embeddings for the same prompts and judge the images.

    python benchmarks/decoder_embedding_sources.py --model runs/shapes/pipeline --category single --num-prompts 24

For Shapes World prompts of one category (validation prompts, ``--prompt-seed`` 1, not the evaluation set), the
decoder (with its caption, the pipeline's super-resolution stages after it) gets, with the same seeds:

- the CLIP image embedding of a render of the prompt (what the prior is trained to predict),
- the prior's sample for the prompt (what ``UnCLIPPipeline`` decodes),
- the prompt's CLIP text embedding (the paper's "text embedding as image embedding" ablation),

and the judge scores each image. If the true image embedding fails as often as the prior's sample, the errors are
the decoder's (or the CLIP embedding's), not the prior's. Prints correct counts and per-attribute counts, and
``centre_correlation``: over the images where the render and the decoded image each hold exactly one object, the
correlation of the two objects' centres (x and y). Near 0 means the decoder does not take where the object is from
the embedding (a render's position is random within what its caption allows).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from unclip_pipelines import EMBEDDED_MODEL, UnCLIPDecoderPipeline, UnCLIPImageVariationPipeline, UnCLIPPriorPipeline
from unclip_pipelines.shapes import caption_category, judge_image, render_scene, sample_eval_prompts, scene_from_caption
from unclip_pipelines.shapes.judge import detect_objects

SOURCES = ("true_image_embedding", "prior_sample", "text_embedding")


def centre_correlation(renders, images) -> dict:
    """Correlation of object centres (x, y) between renders and decoded images that each hold exactly one object."""
    pairs = []
    for render, image in zip(renders, images):
        wanted, got = detect_objects(render), detect_objects(image)
        if len(wanted) == 1 and len(got) == 1:
            pairs.append((wanted[0].cx, wanted[0].cy, got[0].cx, got[0].cy))
    if len(pairs) < 3:
        return {"x": None, "y": None, "images": len(pairs)}
    centres = np.array(pairs)
    return {
        "x": float(np.corrcoef(centres[:, 0], centres[:, 2])[0, 1]),
        "y": float(np.corrcoef(centres[:, 1], centres[:, 3])[0, 1]),
        "images": len(pairs),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--category", default="single", help="single, size, position, pair or held-out")
    parser.add_argument("--num-prompts", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2, help="images per prompt (another render and seed each)")
    parser.add_argument("--prompt-seed", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decoder-guidance-scale", type=float, default=2.0)
    parser.add_argument("--decoder-num-inference-steps", type=int, default=25)
    parser.add_argument("--decoder-eta", type=float, help="sample the decoder with DDIM at this eta (default: ancestral)")
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES), help="embeddings to decode")
    parser.add_argument("--output", help="write the results here as JSON")
    args = parser.parse_args(argv)

    prior = UnCLIPPriorPipeline.from_pretrained(args.model)
    decoder = UnCLIPDecoderPipeline.from_pretrained(args.model)
    variation = UnCLIPImageVariationPipeline.from_pretrained(args.model)
    for pipe in (prior, decoder, variation):
        pipe.set_progress_bar_config(disable=True)
    prompts = [p for p in sample_eval_prompts(1000, seed=args.prompt_seed) if caption_category(p) == args.category]
    if not prompts:
        parser.error(f"no '{args.category}' prompts: use single, size, position, pair or held-out")
    prompts = prompts[: args.num_prompts] * args.repeats
    rng = np.random.default_rng(args.seed)
    renders = [render_scene(scene_from_caption(rng, p)) for p in prompts]
    tokenizer = prior.tokenizer
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    encoders = {
        "true_image_embedding": lambda: variation.encode_image(renders),
        "prior_sample": lambda: prior(prompts, generator=torch.Generator().manual_seed(args.seed)).image_embeds,
        "text_embedding": lambda: prior.text_encoder(ids).text_embeds,
    }
    with torch.no_grad():
        sources = {name: encoders[name]() for name in args.sources}
    results = {}
    for name, embeds in sources.items():
        with torch.no_grad():
            images = decoder(embeds, prompt=prompts, decoder_guidance_scale=args.decoder_guidance_scale,
                             decoder_num_inference_steps=args.decoder_num_inference_steps,
                             decoder_eta=args.decoder_eta, generator=torch.Generator().manual_seed(args.seed)).images
        verdicts = [judge_image(image, prompt) for image, prompt in zip(images, prompts)]
        attributes: dict[str, list[int]] = {}
        for verdict in verdicts:
            for attribute, ok in verdict.attributes().items():
                if ok is not None:
                    attributes.setdefault(attribute, []).append(int(ok))
        results[name] = {"correct": sum(v.correct for v in verdicts), "images": len(verdicts),
                         "attributes": {k: f"{sum(v)}/{len(v)}" for k, v in attributes.items()},
                         "centre_correlation": centre_correlation(renders, images)}
        print(name, json.dumps(results[name]), flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
