"""Small helpers shared by the tests."""

import torch

FEW_STEPS = dict(prior_num_inference_steps=3, decoder_num_inference_steps=3, super_res_num_inference_steps=2)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def fixed_latents(batch: int = 1, embedding_dim: int = 32, decoder_size: int = 32, seed: int = 0) -> dict:
    """Initial noise for all three stages, so two pipelines can be compared step for step."""
    generator = seeded(seed)
    return {
        "prior_latents": torch.randn(batch, embedding_dim, generator=generator),
        "decoder_latents": torch.randn(batch, 3, decoder_size, decoder_size, generator=generator),
        "super_res_latents": torch.randn(batch, 3, 4 * decoder_size, 4 * decoder_size, generator=generator),
    }


KARLO_SCHEDULERS = {
    # scheduler_config.json of kakaobrain/karlo-v1-alpha: no beta_schedule, diffusers' class name
    "prior_scheduler": dict(variance_type="fixed_small_log", prediction_type="sample", clip_sample_range=5.0),
    "decoder_scheduler": dict(variance_type="learned_range", prediction_type="epsilon", clip_sample_range=1.0),
    "super_res_scheduler": dict(variance_type="fixed_small_log", prediction_type="epsilon", clip_sample_range=1.0),
}


def write_slow_tokenizer(tokenizer, folder) -> None:
    """Karlo's tokenizer folder: vocab.json + merges.txt + special_tokens_map.json (no tokenizer.json)."""
    import json
    import os
    import tempfile

    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        model = json.load(open(os.path.join(tmp, "tokenizer.json")))["model"]
    json.dump(model["vocab"], open(os.path.join(folder, "vocab.json"), "w"))
    with open(os.path.join(folder, "merges.txt"), "w") as handle:
        handle.write("#version: 0.2\n")
        handle.writelines(" ".join(m if isinstance(m, list) else m.split()) + "\n" for m in model["merges"])
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    json.dump({**special, "pad_token": "!"}, open(os.path.join(folder, "special_tokens_map.json"), "w"))
    json.dump(
        {**special, "pad_token": "!", "model_max_length": tokenizer.model_max_length, "tokenizer_class": "CLIPTokenizer"},
        open(os.path.join(folder, "tokenizer_config.json"), "w"),
    )


def write_karlo_folder(components: dict, folder, class_name: str = "UnCLIPPipeline") -> None:
    """Lay ``components`` out exactly as the karlo-v1-alpha(-image-variations) Hub folders are laid out."""
    import json
    import os

    index = {"_class_name": class_name, "_diffusers_version": "0.11.0.dev0"}
    for name, component in components.items():
        if component is None or name.startswith(("super_res_2", "super_res_3")):
            continue
        path = os.path.join(folder, name)
        if name in KARLO_SCHEDULERS:
            os.makedirs(path, exist_ok=True)
            config = {"_class_name": "UnCLIPScheduler", "_diffusers_version": "0.11.0.dev0",
                      "clip_sample": True, "num_train_timesteps": 1000, **KARLO_SCHEDULERS[name]}
            json.dump(config, open(os.path.join(path, "scheduler_config.json"), "w"))
            index[name] = ["diffusers", "UnCLIPScheduler"]
        elif name == "tokenizer":
            write_slow_tokenizer(component, path)
            index[name] = ["transformers", "CLIPTokenizer"]
        elif name == "text_proj":
            component.save_pretrained(path, safe_serialization=False)  # Karlo ships .bin weights
            index[name] = ["unclip", "UnCLIPTextProjModel"]
        else:
            component.save_pretrained(path)
            library = "transformers" if type(component).__module__.startswith("transformers") else "diffusers"
            index[name] = [library, type(component).__name__]
    json.dump(index, open(os.path.join(folder, "model_index.json"), "w"), indent=2)
