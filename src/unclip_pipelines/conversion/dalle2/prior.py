"""Converting a ``DiffusionPrior`` state dict into a :class:`~unclip_pipelines.models.dalle2.Dalle2PriorNetwork`."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ...models.dalle2 import Dalle2PriorNetwork
from ..common import ConversionError, apply_rules, format_keys
from .checkpoints import PRIOR
from .config import _Resolver, _resolve_version, _section
from .rules import _count_indices, _finish, _mapped_rules, _meta_model
from .schedulers import _consume_noise_scheduler, scheduler_config
from .versions import PRIOR_LAYOUT_DEFAULTS, PRIOR_LAYOUT_RANGES, prior_semantics


def _prior_layout(net_keys) -> str:
    if any(k.endswith(".gamma") for k in net_keys):
        return "gamma_beta"
    if "null_text_encodings" in net_keys:
        return "null_embeddings"
    if "null_text_embed" in net_keys:
        return "null_text_embed"
    return "no_null"


def _prior_why(key: str, cfg: dict) -> str:
    d, h, dh = cfg["embedding_dim"], cfg["heads"], cfg["dim_head"]
    rules = [
        (r"\.to_q\.weight$", f"heads={h} × dim_head={dh} rows, dim={d} columns"),
        (r"\.to_kv\.weight$", f"2 × dim_head={dh} rows (one shared key/value head), dim={d} columns"),
        (r"\.null_kv$", f"dim_head={dh}"),
        (r"\.to_out\.0\.weight$", f"dim={d} rows, heads={h} × dim_head={dh} columns"),
        (r"\.rotary_emb\.freqs$", f"rotary_emb over min(32, dim_head={dh}) features"),
        (r"\.1\.1\.weight$", f"2 × ff_mult={cfg['ff_mult']} × dim={d} rows (SwiGLU)"),
        (r"\.1\.3\.[gb]$", f"normformer with ff_mult={cfg['ff_mult']}"),
        (r"\.1\.5\.weight$", f"dim={d} rows, ff_mult={cfg['ff_mult']} × dim columns"),
        (r"rel_pos_bias", f"32 buckets × heads={h}"),
        (r"^to_time_embeds\.0\.weight$", f"num_timesteps={cfg['num_timesteps']} × dim·num_time_embeds"),
        (r"^null_text_encodings$", f"max_text_len={cfg['max_text_len']}, dim={d}"),
        (r"^null_text_embeds$", f"num_text_embeds={cfg['num_text_embeds']}, dim={d}"),
        (r"^to_text_embeds", f"num_text_embeds={cfg['num_text_embeds']}, dim={d}"),
        (r"^to_image_embeds", f"num_image_embeds={cfg['num_image_embeds']}, dim={d}"),
    ]
    for pattern, text in rules:
        if re.search(pattern, key):
            return text
    return f"dim={d}"


def _predict_x_start(prior_cfg: Mapping) -> bool:
    value = prior_cfg.get("predict_x_start")
    return True if value is None else bool(value)


def _infer_prior_config(net: Mapping, semantics, config: Mapping, notes: list[str]) -> dict:
    what = "DALLE2-pytorch prior"
    prior_cfg = dict(config)
    net_cfg = dict(prior_cfg.get("net") or {})
    nr = _Resolver(what, net_cfg, notes, "net.")
    pr = _Resolver(what, prior_cfg, notes, "")
    keys = set(net)
    required = ["learned_query", "causal_transformer.layers.0.0.null_kv", "causal_transformer.layers.0.0.to_q.weight"]
    missing = [k for k in required if k not in net]
    if missing:
        raise ConversionError(
            f"{what}: cannot read the architecture, the checkpoint lacks {['net.' + k for k in missing]}. "
            f"Its first keys are {sorted(keys)[:8]}."
        )
    dim = nr.inferred("dim", int(net["learned_query"].shape[0]), "net.learned_query")
    if "image_embed_dim" in prior_cfg and prior_cfg["image_embed_dim"] not in (None, dim):
        raise ConversionError(f"{what}: the config's image_embed_dim={prior_cfg['image_embed_dim']} but dim={dim}.")
    depth = nr.inferred("depth", _count_indices(keys, "causal_transformer.layers."), "causal_transformer.layers.*")
    dim_head = nr.inferred("dim_head", int(net["causal_transformer.layers.0.0.null_kv"].shape[1]), "layers.0.0.null_kv")
    q_rows = int(net["causal_transformer.layers.0.0.to_q.weight"].shape[0])
    if q_rows % dim_head:
        raise ConversionError(f"{what}: to_q has {q_rows} rows, not a multiple of dim_head={dim_head}.")
    heads = nr.inferred("heads", q_rows // dim_head, "layers.0.0.to_q rows ÷ dim_head")
    ff_rows = net.get("causal_transformer.layers.0.1.1.weight")
    ff_mult = 4
    if ff_rows is not None:
        inner = int(ff_rows.shape[0]) // 2
        ff_mult = inner // dim if inner % dim == 0 else inner / dim
        ff_mult = nr.inferred("ff_mult", ff_mult, "layers.0.1.1 rows ÷ (2 × dim)")
    g = "gamma" if semantics.layer_norm_type == "functional" else "g"
    normformer = nr.inferred("normformer", f"causal_transformer.layers.0.1.3.{g}" in keys, "layers.0.1.3 present")
    norm_in = nr.inferred("norm_in", f"causal_transformer.init_norm.{g}" in keys, "init_norm present")
    norm_out = nr.inferred("norm_out", f"causal_transformer.norm.{g}" in keys, "causal_transformer.norm present")
    final_proj = nr.inferred("final_proj", "causal_transformer.project_out.weight" in keys, "project_out present")
    rotary = nr.inferred("rotary_emb", "causal_transformer.layers.0.0.rotary_emb.freqs" in keys, "rotary_emb.freqs")

    if "to_time_embeds.0.weight" in net:
        rows, cols = net["to_time_embeds.0.weight"].shape
        num_timesteps = nr.inferred("num_timesteps", int(rows), "to_time_embeds.0 (learned embedding)")
        num_time_embeds = int(cols) // dim
    else:
        last = sorted(k for k in keys if re.match(r"to_time_embeds\.0\.1\.net\.\d+\.weight$", k))
        if not last:
            raise ConversionError(f"{what}: no timestep embedding (net.to_time_embeds.0.weight or its MLP) found.")
        num_timesteps = nr.inferred("num_timesteps", None, "to_time_embeds.0.1 (continuous MLP)")
        final = max(last, key=lambda k: int(k.split(".")[4]))
        num_time_embeds = int(net[final].shape[0]) // dim
    num_time_embeds = nr.inferred("num_time_embeds", num_time_embeds, "time embedding width ÷ dim")

    def tokens(name):
        w = net.get(f"to_{name}_embeds.0.weight")
        return 1 if w is None else int(w.shape[0]) // dim

    num_text_embeds = nr.inferred("num_text_embeds", tokens("text"), "to_text_embeds")
    num_image_embeds = nr.inferred("num_image_embeds", tokens("image"), "to_image_embeds")
    null = net.get("null_text_encodings", net.get("null_text_embed"))
    if null is not None:
        max_text_len = nr.inferred("max_text_len", int(null.shape[1]), "null text tokens")
    else:
        max_text_len = None
        notes.append("max_text_len = None (this release used the text encodings at their own length)")

    self_cond = nr.chosen("self_cond", False)
    if self_cond and semantics.self_cond_layout is None:
        raise ConversionError(f"{what}: self_cond=True, but DALLE2-pytorch {semantics.version} had no self-conditioning.")
    for name in ("attn_dropout", "ff_dropout"):
        net_cfg.setdefault(name, 0.0)
    cond_on_text = pr.chosen("condition_on_text_encodings", True)
    image_embed_scale = pr.chosen("image_embed_scale", None, ": sqrt(dim)")
    final_l2norm = pr.chosen("sampling_final_clamp_l2norm", False)
    # DALLE2-pytorch applies both l2-norm clamps only with predict_x_start (also when predict_v overrides it)
    if final_l2norm and not _predict_x_start(prior_cfg):
        notes.append("sampling_final_clamp_l2norm ignored: DALLE2-pytorch applies it only with predict_x_start=True")
        final_l2norm = False
    if pr.config.get("sampling_clamp_l2norm") and _predict_x_start(prior_cfg):
        raise ConversionError(
            f"{what}: sampling_clamp_l2norm=True (l2-normalise x_0 at every step) is a sampling option this "
            "package's schedulers (UnCLIPScheduler, Dalle2DDIMScheduler) do not have; set it to false in the config "
            "to convert anyway, knowing that samples will differ from DALLE2-pytorch's."
        )
    if pr.config.get("init_image_embed_l2norm"):
        raise ConversionError(
            f"{what}: init_image_embed_l2norm=True (start sampling from l2-normalised noise × image_embed_scale) is "
            "not reproduced by this package's prior stage, which starts from plain Gaussian noise; set it to false in "
            "the config to convert anyway, knowing that samples will differ from DALLE2-pytorch's."
        )
    return {
        "embedding_dim": dim,
        "depth": depth,
        "dim_head": dim_head,
        "heads": heads,
        "ff_mult": ff_mult,
        "norm_in": norm_in,
        "norm_out": norm_out,
        "final_proj": final_proj,
        "normformer": normformer,
        "rotary_emb": rotary,
        "attn_dropout": float(net_cfg["attn_dropout"]),
        "ff_dropout": float(net_cfg["ff_dropout"]),
        "num_timesteps": num_timesteps,
        "num_time_embeds": num_time_embeds,
        "num_image_embeds": num_image_embeds,
        "num_text_embeds": num_text_embeds,
        "max_text_len": max_text_len,
        "self_cond": bool(self_cond),
        "condition_on_text_encodings": bool(cond_on_text),
        "image_embed_scale": image_embed_scale,
        "final_l2norm": bool(final_l2norm),
        "normalize_text_embed": True,
        **semantics.model_switches(),
    }


def convert_dalle2_prior(
    state_dict: Mapping[str, torch.Tensor],
    *,
    version: str | None = None,
    source_version: str | None = None,
    config: Mapping | None = None,
) -> tuple[Dalle2PriorNetwork, dict, list[str]]:
    """
    Convert a ``DiffusionPrior`` state dict (``net.*``, ``noise_scheduler.*``) into a
    :class:`Dalle2PriorNetwork` and an ``UnCLIPScheduler`` config. Returns ``(model, scheduler_config, notes)``.

    ``version`` is the release recorded in the checkpoint, ``source_version`` one given by the user.
    """
    what = "DALLE2-pytorch prior"
    notes: list[str] = []
    state = dict(state_dict)
    clip_keys = [k for k in state if k.startswith("clip.")]
    for key in clip_keys:
        del state[key]
    if clip_keys:
        notes.append(f"{len(clip_keys)} keys of the attached CLIP model (clip.*) were not converted")
    schedule, timesteps = _consume_noise_scheduler(state, "noise_scheduler.", what)
    outside = [k for k in state if not k.startswith("net.")]
    if outside:
        raise ConversionError(f"{what}: unexpected keys outside net.* / noise_scheduler.* / clip.*:\n{format_keys(outside)}")
    net = {k[len("net.") :]: v for k, v in state.items()}
    layout = _prior_layout(net)
    semantics = _resolve_version(
        "prior", layout, version, source_version, notes, PRIOR_LAYOUT_DEFAULTS, PRIOR_LAYOUT_RANGES, prior_semantics
    )
    prior_cfg = _section(config, PRIOR)
    cfg = _infer_prior_config(net, semantics, prior_cfg, notes)
    if cfg["self_cond"] and version is None and source_version is None:
        raise ConversionError(
            f"{what}: self-conditioning changed layout in 1.12.1; pass --source_version for a self-conditioned prior."
        )
    if "timesteps" in prior_cfg and prior_cfg["timesteps"] not in (None, timesteps):
        raise ConversionError(f"{what}: the config says timesteps={prior_cfg['timesteps']}, the noise schedule has {timesteps}.")
    if prior_cfg.get("beta_schedule") not in (None, schedule):
        raise ConversionError(
            f"{what}: the config says beta_schedule={prior_cfg['beta_schedule']!r}, the saved betas are {schedule!r}."
        )
    notes.append(f"noise schedule: {schedule}, {timesteps} steps (from noise_scheduler.betas)")

    model = _meta_model(Dalle2PriorNetwork, cfg)
    model_state = model.state_dict()
    null_name = "null_text_embed" if layout == "null_text_embed" else None

    def to_source(key: str) -> str:
        if null_name and key == "null_text_encodings":
            key = null_name
        if semantics.layer_norm_type == "functional":
            if key.endswith(".g") and key[:-2] + ".b" in model_state:
                key = key[:-2] + ".gamma"
            elif key.endswith(".b"):
                key = key[:-2] + ".beta"
        return "net." + key

    rules = _mapped_rules(PRIOR, model_state, to_source, lambda key: _prior_why(key, cfg))
    converted = apply_rules(
        {"net." + k: v for k, v in net.items()}, rules, what, context=f" (DALLE2-pytorch {cfg['source_version']})"
    )
    model = _finish(model, converted[PRIOR], what)

    predict_v = bool(prior_cfg.get("predict_v", False))
    predict_x_start = _predict_x_start(prior_cfg)
    prediction = "v_prediction" if predict_v else ("sample" if predict_x_start else "epsilon")
    notes.append(f"prediction: {prediction} ({'from the config' if 'predict_x_start' in prior_cfg or predict_v else 'DALLE2-pytorch default x_0'})")
    # DiffusionPrior.p_mean_variance clamps x_0 to ±1 unless predict_x_start, which stays in force (default True)
    # when predict_v takes precedence over it
    clip_range = None if predict_x_start else 1.0
    notes.append(f"x_0 clamp: {'none' if clip_range is None else '±1'} (predict_x_start={predict_x_start})")
    sched = scheduler_config(
        schedule, timesteps, prediction=prediction, learned_variance=False, clip_range=clip_range, what=what
    )
    return model, sched, notes
