"""
Convert lucidrains' DALLE2-pytorch checkpoints (``DiffusionPrior`` and ``Decoder``) into native diffusers ports.

DALLE2-pytorch's networks (multi-query cosine-similarity attention with null key/values, rotary + T5 position bias,
SwiGLU, gain-only layer norms, its own U-Net with cross-attention inside resnet blocks) have no counterpart among
diffusers' classes, so the weights go into :class:`~unclip_pipelines.models.dalle2.Dalle2PriorNetwork` and
:class:`~unclip_pipelines.models.dalle2.Dalle2UNet`, which keep the source's module tree. What changes is *which
release's arithmetic* they reproduce: DALLE2-pytorch changed it many times without renaming parameters, so the
release is read from the checkpoint (``version``), or given with ``source_version``, or — for the key layouts that
only one behaviour ever had — assumed and reported (see :mod:`.dalle2_versions`).

Inputs: ``DiffusionPriorTrainer`` / ``DecoderTrainer`` checkpoints (``model`` / ``ema`` / ``ema_model`` entries), the
trackers' model-only files (``{config, model, version}``) and bare state dicts. Sizes are read from tensor shapes;
values no shape reveals come from the training config (``--config``, or the one embedded in the file), else
DALLE2-pytorch's defaults, and the summary says which. Every key must be consumed and every parameter filled,
otherwise :class:`~.common.ConversionError` lists the keys (never ``strict=False``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models.dalle2 import Dalle2PriorNetwork, Dalle2UNet
from .common import ConversionError, Rule, apply_rules, format_keys, load_into_model, load_torch_file
from .dalle2_versions import (
    DECODER_LAYOUT_DEFAULTS,
    DECODER_LAYOUT_RANGES,
    PRIOR_LAYOUT_DEFAULTS,
    PRIOR_LAYOUT_RANGES,
    decoder_semantics,
    format_version,
    parse_version,
    prior_semantics,
)

__all__ = [
    "Dalle2ConversionResult",
    "beta_schedule_betas",
    "convert_dalle2_decoder",
    "convert_dalle2_prior",
    "convert_dalle2_to_diffusers",
    "detect_beta_schedule",
    "load_dalle2_checkpoint",
    "select_state_dict",
]

PRIOR = "prior"
DECODER = "decoder"
WEIGHT_CHOICES = ("auto", "ema", "model")
NOISE_SCHEDULER_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "p2_loss_weight",
)
#: beta schedules of DALLE2-pytorch that this package's UnCLIPScheduler can run, as its ``beta_schedule``
SUPPORTED_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}


# --------------------------------------------------------------------------------------------------------------------
# loading


def load_dalle2_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> Mapping:
    """Load a DALLE2-pytorch file (trainer checkpoint, tracker model file or state dict) onto the CPU."""
    loaded = load_torch_file(path, allow_pickle=allow_pickle, what="DALLE2-pytorch checkpoint")
    if not isinstance(loaded, Mapping):
        raise ConversionError(
            f"{os.fspath(path)!r} holds a {type(loaded).__name__}, not a DALLE2-pytorch checkpoint (a dict with "
            "'model' / 'ema' / 'ema_model' entries, or a state dict)."
        )
    return loaded


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _kind_of(state_dict: Mapping) -> str | None:
    if any(k.startswith("net.") for k in state_dict):
        return PRIOR
    if any(k.startswith("unets.") for k in state_dict):
        return DECODER
    return None


def select_state_dict(container: Mapping, weights: str = "auto") -> tuple[dict, str, str]:
    """
    Pick the weights to convert: ``(state_dict, kind, entry)``.

    ``weights='auto'`` takes the EMA weights when the file has them (``ema_model`` of a prior trainer, the ``ema``
    Unets of a decoder trainer), as DALLE2-pytorch's own samplers do; ``'ema'`` requires them; ``'model'`` takes the
    online (trained) weights.
    """
    if weights not in WEIGHT_CHOICES:
        raise ConversionError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}.")
    if _is_state_dict(container) and _kind_of(container):
        if weights == "ema":
            raise ConversionError("The file is a bare state dict: it has no separate EMA weights (use --weights model).")
        return dict(container), _kind_of(container), "state dict"
    entries = sorted(str(k) for k in container)
    model = container.get("model")
    if not _is_state_dict(model) or _kind_of(model) is None:
        raise ConversionError(
            "Not a DALLE2-pytorch checkpoint: no 'model' state dict with 'net.*' (DiffusionPrior) or 'unets.*' "
            f"(Decoder) keys. Entries found: {entries[:15]}."
        )
    kind = _kind_of(model)
    if weights == "model":
        return dict(model), kind, "model"

    if kind == PRIOR:
        if _is_state_dict(container.get("ema_model")):
            return dict(container["ema_model"]), kind, "ema_model"
        ema = container.get("ema")
        if _is_state_dict(ema) and any(k.startswith("ema_model.") for k in ema):
            return {k[len("ema_model.") :]: v for k, v in ema.items() if k.startswith("ema_model.")}, kind, "ema"
    else:
        ema = container.get("ema")
        if _is_state_dict(ema):
            unet_keys = {}
            for key, value in ema.items():
                match = re.match(r"(\d+)\.ema_model\.(.+)", key)
                if match:
                    unet_keys[f"unets.{match.group(1)}.{match.group(2)}"] = value
            if unet_keys:
                merged = {k: v for k, v in model.items() if not k.startswith("unets.")}
                ema_unets = {k.split(".")[1] for k in unet_keys}
                model_unets = {k.split(".")[1] for k in model if k.startswith("unets.")}
                if ema_unets != model_unets:
                    raise ConversionError(
                        f"The decoder's 'ema' entry has EMA copies of unets {sorted(ema_unets)} but the model has "
                        f"unets {sorted(model_unets)}; use --weights model."
                    )
                merged.update(unet_keys)
                return merged, kind, "ema"
    if weights == "ema":
        raise ConversionError(f"The checkpoint has no EMA weights (entries: {entries[:15]}); use --weights model.")
    return dict(model), kind, "model"


def read_version(container: Mapping) -> str | None:
    version = container.get("version") if isinstance(container, Mapping) and not _is_state_dict(container) else None
    return None if version is None else str(version)


def load_config(config) -> dict | None:
    """A DALLE2-pytorch training config (JSON path or dict): ``{"prior": ...}`` / ``{"decoder": ...}`` or bare."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return dict(config)
    path = os.fspath(config)
    if not os.path.isfile(path):
        raise ConversionError(f"The config file {path!r} does not exist.")
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ConversionError(f"The config file {path!r} is not valid JSON: {error}") from error
    if not isinstance(data, Mapping):
        raise ConversionError(f"The config file {path!r} does not hold a JSON object.")
    return dict(data)


def _section(config: Mapping | None, kind: str) -> dict:
    if not config:
        return {}
    if kind in config and isinstance(config[kind], Mapping):
        return dict(config[kind])
    other = DECODER if kind == PRIOR else PRIOR
    if other in config:
        raise ConversionError(f"The config is for a {other} ('{other}' section), but the checkpoint is a {kind}.")
    return dict(config)


# --------------------------------------------------------------------------------------------------------------------
# noise schedules


def beta_schedule_betas(name: str, timesteps: int) -> torch.Tensor:
    """DALLE2-pytorch's beta schedules (float64, as it computes them)."""
    t = timesteps
    scale = 1000 / t
    if name == "cosine":
        s = 0.008
        x = torch.linspace(0, t, t + 1, dtype=torch.float64)
        alphas_cumprod = torch.cos(((x / t) + s) / (1 + s) * math.pi * 0.5) ** 2
        alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
        return torch.clip(1 - (alphas_cumprod[1:] / alphas_cumprod[:-1]), 0, 0.999)
    if name == "linear":
        return torch.linspace(scale * 0.0001, scale * 0.02, t, dtype=torch.float64)
    if name == "quadratic":
        return torch.linspace((scale * 0.0001) ** 0.5, (scale * 0.02) ** 0.5, t, dtype=torch.float64) ** 2
    if name == "sigmoid":
        betas = torch.linspace(-6, 6, t, dtype=torch.float64)
        return torch.sigmoid(betas) * (scale * 0.02 - scale * 0.0001) + scale * 0.0001
    if name == "jsd":
        return (1.0 / torch.linspace(t, 1, t)).to(torch.float64)
    raise ConversionError(f"unknown DALLE2-pytorch beta schedule {name!r}")


def detect_beta_schedule(betas: torch.Tensor, what: str) -> tuple[str, int]:
    """Which of DALLE2-pytorch's schedules produced the saved ``betas`` buffer: ``(name, timesteps)``."""
    betas = betas.detach().to(torch.float64).reshape(-1)
    timesteps = betas.shape[0]
    for name in ("cosine", "linear", "quadratic", "sigmoid", "jsd"):
        reference = beta_schedule_betas(name, timesteps).to(torch.float32).to(torch.float64)
        if torch.allclose(betas, reference, rtol=1e-5, atol=1e-7):
            return name, timesteps
    raise ConversionError(
        f"{what}: the saved noise schedule (betas of {timesteps} steps, first {betas[:3].tolist()}) is none of "
        "DALLE2-pytorch's cosine / linear / quadratic / sigmoid / jsd schedules."
    )


def _consume_noise_scheduler(state_dict: dict, prefix: str, what: str) -> tuple[str, int]:
    keys = {k for k in state_dict if k.startswith(prefix)}
    names = {k[len(prefix) :] for k in keys}
    unknown = names - set(NOISE_SCHEDULER_BUFFERS)
    if unknown:
        raise ConversionError(f"{what}: unexpected noise-scheduler buffers:\n{format_keys(prefix + n for n in unknown)}")
    if "betas" not in names:
        raise ConversionError(
            f"{what}: the checkpoint has no {prefix}betas buffer, so its noise schedule is unknown (missing key "
            f"{prefix}betas)."
        )
    schedule = detect_beta_schedule(state_dict[prefix + "betas"], what)
    for key in keys:
        del state_dict[key]
    return schedule


def scheduler_config(
    schedule: str, timesteps: int, *, prediction: str, learned_variance: bool, clip_range: float | None, what: str
) -> dict:
    """The :class:`~unclip_pipelines.schedulers.UnCLIPScheduler` config of one DALLE2-pytorch noise schedule."""
    problems = []
    if schedule not in SUPPORTED_SCHEDULES:
        problems.append(
            f"the '{schedule}' beta schedule (UnCLIPScheduler's beta_schedule supports squaredcos_cap_v2 = cosine "
            "and linear only)"
        )
    if prediction == "v_prediction":
        problems.append("v-prediction (predict_v=True; UnCLIPScheduler predicts epsilon or sample only)")
    if problems:
        raise ConversionError(
            f"{what}: the weights convert, but this package's UnCLIPScheduler cannot reproduce the model's sampler: "
            + "; ".join(problems)
            + ". Nothing was written."
        )
    config = {
        "_class_name": "UnCLIPScheduler",
        "num_train_timesteps": timesteps,
        "variance_type": "learned_range" if learned_variance else "fixed_small_log",
        "clip_sample": clip_range is not None,
        "clip_sample_range": float(clip_range if clip_range is not None else 1.0),
        "prediction_type": prediction,
        "beta_schedule": SUPPORTED_SCHEDULES[schedule],
        "beta_start": 0.0001 * 1000 / timesteps,
        "beta_end": 0.02 * 1000 / timesteps,
    }
    return config


# --------------------------------------------------------------------------------------------------------------------
# shared helpers


def _count_indices(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in keys if (m := pattern.match(key))}
    if indices and indices != set(range(max(indices) + 1)):
        raise ConversionError(f"the checkpoint's {prefix}* blocks are not numbered 0..n-1: {sorted(indices)}")
    return max(indices) + 1 if indices else 0


class _Resolver:
    """Resolves architecture values: shapes, then the config (checked against shapes), then defaults — noting each."""

    def __init__(self, what: str, config: Mapping, notes: list[str], prefix: str = ""):
        self.what, self.config, self.notes, self.prefix = what, config, notes, prefix

    def inferred(self, name: str, value, evidence: str, config_key: str | None = None):
        config_key = config_key or name
        if config_key in self.config and self.config[config_key] is not None:
            given = self.config[config_key]
            same = tuple(given) == tuple(value) if isinstance(value, (tuple, list)) else given == value
            if not same:
                raise ConversionError(
                    f"{self.what}: the config says {self.prefix}{config_key}={given!r} but the weights have "
                    f"{value!r} ({evidence}). Loading these weights into that architecture is what gives noise "
                    "(DALLE2-pytorch #282); pass the config the checkpoint was trained with, or no config."
                )
        self.notes.append(f"{name} = {value!r} (from {evidence})")
        return value

    def chosen(self, name: str, default, why: str = "", config_key: str | None = None):
        config_key = config_key or name
        if config_key in self.config and self.config[config_key] is not None:
            value = self.config[config_key]
            self.notes.append(f"{name} = {value!r} (from the config's {self.prefix}{config_key})")
            return value
        self.notes.append(f"{name} = {default!r} (NOT inferable from the weights; DALLE2-pytorch's default{why})")
        return default


def _resolve_version(kind, layout, found, flag, notes, layout_defaults, layout_ranges, semantics_fn):
    if found is not None and flag is not None and parse_version(found) != parse_version(flag):
        raise ConversionError(
            f"--source_version {flag} contradicts the version {found} recorded in the checkpoint; drop the flag."
        )
    if flag is not None:
        version, origin = parse_version(flag), "--source_version"
    elif found is not None:
        version, origin = parse_version(found), "the checkpoint's 'version' entry"
    else:
        version = layout_defaults[layout]
        if version is None:
            raise ConversionError(
                f"The {kind} checkpoint records no DALLE2-pytorch version, and its key layout ({layout}) was used by "
                f"releases {layout_ranges[layout]}, which compute differently with the same weights. Pass "
                "--source_version with the release it was trained with (its 'version' entry is only in trainer and "
                "tracker files, which need --allow-pickle)."
            )
        origin = f"assumed: the only behaviour of its key layout ({layout}, releases {layout_ranges[layout]})"
    semantics = semantics_fn(version)
    if semantics.key_layout != layout:
        raise ConversionError(
            f"The {kind} checkpoint's key layout ({layout}, releases {layout_ranges[layout]}) does not match "
            f"DALLE2-pytorch {format_version(version)} (from {origin}), whose layout is {semantics.key_layout}. The "
            "file was not saved by that release; check --source_version."
        )
    notes.append(f"source release: DALLE2-pytorch {format_version(version)} ({origin})")
    return semantics


def _mapped_rules(
    target: str,
    model_state: Mapping[str, torch.Tensor],
    to_source,
    why,
) -> list[Rule]:
    rules = []
    for key, tensor in model_state.items():
        source = to_source(key)
        rules.append(
            Rule(
                target=target,
                sources={source: (tuple(tensor.shape), why(key))},
                build=lambda d, source=source, key=key: {key: d[source]},
            )
        )
    return rules


def _meta_model(cls, config: dict):
    with torch.device("meta"):
        return cls(**config)


def _finish(model, state: dict, what: str):
    model = load_into_model(model, state, what)
    model.eval()
    return model


# --------------------------------------------------------------------------------------------------------------------
# prior


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
    if pr.config.get("sampling_clamp_l2norm"):
        raise ConversionError(
            f"{what}: sampling_clamp_l2norm=True (l2-normalise x_0 at every step) is a sampling option "
            "UnCLIPScheduler does not have."
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
    predict_x_start = bool(prior_cfg.get("predict_x_start", True))
    prediction = "v_prediction" if predict_v else ("sample" if predict_x_start else "epsilon")
    notes.append(f"prediction: {prediction} ({'from the config' if 'predict_x_start' in prior_cfg or predict_v else 'DALLE2-pytorch default x_0'})")
    sched = scheduler_config(
        schedule,
        timesteps,
        prediction=prediction,
        learned_variance=False,
        clip_range=None if prediction == "sample" else 1.0,
        what=what,
    )
    return model, sched, notes


# --------------------------------------------------------------------------------------------------------------------
# decoder


def _decoder_layout(keys) -> str:
    if any(k.endswith(".gamma") for k in keys):
        return "gamma_beta"
    if any(".cross_attn.fn." in k for k in keys):
        return "cross_attn_fn"
    return "cross_attn"


def _unet_why(key: str, cfg: dict) -> str:
    rules = [
        (r"cross_attn\.to_q", "cross-attention of 8 heads × 64 on the stage width"),
        (r"cross_attn\.to_kv", f"cond_dim={cfg['cond_dim']} → 2 × 8 heads × 64"),
        (r"(mid_attn|\.3\.fn\.fn|\.2\.fn\.fn)\.to_q", f"attn_heads={cfg['attn_heads']} × attn_dim_head={cfg['attn_dim_head']}"),
        (r"\.null_kv$", f"attn_dim_head={cfg['attn_dim_head']} (self-attention) or 64 (cross-attention)"),
        (r"to_qkv", f"3 × attn_heads={cfg['attn_heads']} × attn_dim_head={cfg['attn_dim_head']} (sparse_attn)"),
        (r"^to_time", f"dim={cfg['dim']} (time features 4 × dim), cond_dim={cfg['cond_dim']}"),
        (r"^image_to_tokens|^null_image_embed", f"num_image_tokens={cfg['num_image_tokens']} × cond_dim={cfg['cond_dim']}, image_embed_dim={cfg['image_embed_dim']}"),
        (r"^null_text_embed", f"max_text_len={cfg['max_text_len']}, cond_dim={cfg['cond_dim']}"),
        (r"^text_to_cond", f"text_embed_dim={cfg['text_embed_dim']} → cond_dim={cfg['cond_dim']}"),
        (r"^init_conv", f"init_dim / kernel sizes {cfg['init_cross_embed_kernel_sizes']}, in_channels={cfg['in_channels']} × (1 + lowres_cond + self_cond)"),
        (r"^to_out", f"out_channels={cfg['out_channels']} (learned variance doubles it), dim={cfg['dim']}"),
    ]
    for pattern, text in rules:
        if re.search(pattern, key):
            return text
    return f"dim={cfg['dim']}, dim_mults={tuple(cfg['dim_mults'])}, num_resnet_blocks={cfg['num_resnet_blocks']}"


def _infer_unet_config(u: int, unet: Mapping, semantics, unet_cfg: Mapping, decoder_cfg: Mapping, notes: list[str]) -> dict:
    what = f"DALLE2-pytorch decoder unet {u + 1}"
    r = _Resolver(what, unet_cfg, notes, f"unets[{u}].")
    keys = set(unet)
    required = ["to_time_hiddens.1.weight", "norm_cond.weight", "to_time_tokens.0.weight", "to_out.weight", "null_text_embed"]
    missing = [k for k in required if k not in unet]
    if missing:
        raise ConversionError(f"{what}: cannot read the architecture, the checkpoint lacks {[f'unets.{u}.' + k for k in missing]}.")
    if any(k.startswith("upsample_combiner.") for k in keys):
        raise ConversionError(f"{what}: combine_upsample_fmaps=True is not supported (its resize_right resampling is not ported).")

    dim = r.inferred("dim", int(unet["to_time_hiddens.1.weight"].shape[1]), "to_time_hiddens.1 columns")
    cond_dim = r.inferred("cond_dim", int(unet["norm_cond.weight"].shape[0]), "norm_cond")
    num_time_tokens = r.inferred("num_time_tokens", int(unet["to_time_tokens.0.weight"].shape[0]) // cond_dim, "to_time_tokens.0 rows ÷ cond_dim")
    num_image_tokens = r.inferred("num_image_tokens", int(unet["null_image_embed"].shape[1]), "null_image_embed")
    max_text_len = r.inferred("max_text_len", int(unet["null_text_embed"].shape[1]), "null_text_embed")

    image_embed_dim = None
    cond_on_image = "image_to_tokens.0.weight" in keys
    to_hiddens = "to_image_hiddens.0.weight" in keys
    if to_hiddens and not cond_on_image:
        raise ConversionError(
            f"{what}: image-conditioned with image_embed_dim == cond_dim (no image_to_tokens projection); "
            "DALLE2-pytorch's own forward fails for that configuration, so it is not supported."
        )
    if cond_on_image:
        image_embed_dim = int(unet["image_to_tokens.0.weight"].shape[1])
        image_embed_dim = r.inferred("image_embed_dim", image_embed_dim, "image_to_tokens.0 columns")
    notes.append(f"cond_on_image_embeds = {cond_on_image}, add_image_embeds_to_time = {to_hiddens} (from the keys)")
    text_embed_dim = None
    cond_on_text = "text_to_cond.weight" in keys
    if cond_on_text:
        text_embed_dim = r.inferred("text_embed_dim", int(unet["text_to_cond.weight"].shape[1]), "text_to_cond")
    r.inferred("cond_on_text_encodings", cond_on_text, "text_to_cond present")
    lowres_noise_cond = "to_lowres_noise_cond.1.weight" in keys

    if "init_conv.convs.0.weight" in keys:
        convs = [unet[f"init_conv.convs.{i}.weight"] for i in range(_count_indices(keys, "init_conv.convs."))]
        init_cross_embed, kernels = True, tuple(int(w.shape[-1]) for w in convs)
        init_dim, init_channels = sum(int(w.shape[0]) for w in convs), int(convs[0].shape[1])
        init_kernel = 7
        r.inferred("init_cross_embed_kernel_sizes", tuple(sorted(kernels)), "init_conv.convs")
    else:
        w = unet["init_conv.weight"]
        init_cross_embed, kernels = False, (3, 7, 15)
        init_dim, init_channels, init_kernel = int(w.shape[0]), int(w.shape[1]), int(w.shape[-1])
        r.inferred("init_conv_kernel_size", init_kernel, "init_conv")
    r.inferred("init_cross_embed", init_cross_embed, "init_conv layout")

    num_stages = _count_indices(keys, "downs.")
    if num_stages == 0 or _count_indices(keys, "ups.") != num_stages:
        raise ConversionError(f"{what}: the numbers of down ({num_stages}) and up ({_count_indices(keys, 'ups.')}) stages differ.")
    memory_efficient = r.inferred("memory_efficient", "init_resnet_block.block1.project.weight" in keys, "init_resnet_block present")
    dims = [init_dim]
    for j in range(num_stages):
        post = next((unet[k] for k in (f"downs.{j}.4.weight", f"downs.{j}.4.1.weight") if k in unet), None)
        if post is None and f"downs.{j}.4.convs.0.weight" in unet:
            post = torch.empty(
                sum(int(unet[f"downs.{j}.4.convs.{i}.weight"].shape[0]) for i in range(_count_indices(keys, f"downs.{j}.4.convs.")))
            )
        if post is None:
            raise ConversionError(f"{what}: no down-sampling (or final 1x1 conv) weights under unets.{u}.downs.{j}.4.")
        dims.append(int(post.shape[0]))
    mults = []
    for d in dims[1:]:
        if d % dim:
            raise ConversionError(f"{what}: a stage has {d} channels, not a multiple of dim={dim}.")
        mults.append(d // dim)
    dim_mults = r.inferred("dim_mults", tuple(mults), "the stages' widths ÷ dim")
    num_resnet_blocks = tuple(_count_indices(keys, f"downs.{j}.2.") for j in range(num_stages))
    num_resnet_blocks = r.inferred("num_resnet_blocks", num_resnet_blocks if len(set(num_resnet_blocks)) > 1 else num_resnet_blocks[0], "downs.*.2.*")
    self_attn = tuple(f"downs.{j}.3.fn.fn.to_q.weight" in keys for j in range(num_stages))
    linear = tuple(f"downs.{j}.3.fn.to_qkv.weight" in keys for j in range(num_stages))
    self_attn = r.inferred("self_attn", self_attn if len(set(self_attn)) > 1 else self_attn[0], "downs.*.3 attention keys")
    sparse_attn = any(linear)
    if sparse_attn and not all(a or s for a, s in zip(_per(self_attn, num_stages), linear)):
        raise ConversionError(f"{what}: sparse_attn, but some stages without self-attention have no linear attention.")
    if sparse_attn:
        r.inferred("sparse_attn", sparse_attn, "linear attention keys")
    attn_dim_head = r.inferred("attn_dim_head", int(unet["mid_attn.fn.fn.null_kv"].shape[1]), "mid_attn null_kv")
    attn_heads = r.inferred("attn_heads", int(unet["mid_attn.fn.fn.to_q.weight"].shape[0]) // attn_dim_head, "mid_attn to_q rows ÷ attn_dim_head")

    def kind_of_down(j):
        base = f"downs.{j}.0" if memory_efficient else f"downs.{j}.4"
        if f"{base}.1.weight" in keys:
            return "pixel_unshuffle"
        if f"{base}.convs.0.weight" in keys:
            return "cross_embed"
        w = unet.get(f"{base}.weight")
        return "conv" if w is not None and w.shape[-1] == 4 else None

    downs = {kind_of_down(j) for j in range(num_stages if memory_efficient else num_stages - 1)} - {None}
    if len(downs) > 1:
        raise ConversionError(f"{what}: mixed down-sampling layers {sorted(downs)}.")
    downsample_type = downs.pop() if downs else "pixel_unshuffle"
    cross_kernels = (2, 4)
    if downsample_type == "cross_embed":
        base = "downs.0.0" if memory_efficient else "downs.0.4"
        cross_kernels = tuple(sorted(int(unet[f"{base}.convs.{i}.weight"].shape[-1]) for i in range(_count_indices(keys, f"{base}.convs."))))
    r.inferred("cross_embed_downsample", downsample_type == "cross_embed", "down-sampling keys")

    def kind_of_up(j):
        if f"ups.{j}.3.net.0.weight" in keys:
            return "pixel_shuffle"
        if f"ups.{j}.3.1.weight" in keys:
            return "nearest"
        return "conv_transpose" if f"ups.{j}.3.weight" in keys else None

    ups = {kind_of_up(j) for j in range(num_stages)} - {None}
    if len(ups) > 1:
        raise ConversionError(f"{what}: mixed up-sampling layers {sorted(ups)}.")
    upsample_type = ups.pop() if ups else "pixel_shuffle"
    if "pixel_shuffle_upsample" in unet_cfg:
        r.inferred("pixel_shuffle_upsample", upsample_type == "pixel_shuffle", "up-sampling keys")
    notes.append(f"up/down-sampling = {upsample_type} / {downsample_type} (from the keys)")

    out_rows, out_in = int(unet["to_out.weight"].shape[0]), int(unet["to_out.weight"].shape[1])
    final_kernel = int(unet["to_out.weight"].shape[-1])
    decoder_channels = int(decoder_cfg.get("channels") or 3)
    if semantics.lowres_cond_at_output and out_in != dim:
        lowres_cond, channels = True, out_in - dim
    elif semantics.lowres_cond_at_output:
        lowres_cond, channels = False, decoder_channels
    else:
        lowres_cond, channels = u > 0, decoder_channels
    if lowres_cond != (u > 0):
        raise ConversionError(
            f"{what}: lowres_cond={lowres_cond}, but in a DALLE2-pytorch Decoder only the unets after the first "
            "are conditioned on a low-resolution image."
        )
    channels = r.inferred("channels", channels, "to_out input" if lowres_cond and semantics.lowres_cond_at_output else "the decoder's channels")
    extra = init_channels - channels * (1 + int(lowres_cond))
    if extra not in (0, channels):
        raise ConversionError(
            f"{what}: init_conv takes {init_channels} channels, which is not channels={channels} × (1 + lowres_cond"
            f"={int(lowres_cond)} + self_cond)."
        )
    self_cond = r.inferred("self_cond", extra == channels, "init_conv input channels")
    if self_cond and not semantics.has_self_cond:
        raise ConversionError(f"{what}: the weights look self-conditioned, which release {semantics.version} did not have.")
    if out_rows not in (channels, 2 * channels):
        raise ConversionError(f"{what}: to_out has {out_rows} output channels; expected {channels} or {2 * channels}.")
    learned_variance = out_rows == 2 * channels
    notes.append(f"learned_variance = {learned_variance} (from to_out's {out_rows} output channels)")

    resnet_groups = r.chosen("resnet_groups", 8)
    weight_std = r.chosen("resnet_weight_standardization", False)
    scale_skip = r.chosen("scale_skip_connection", False)
    cos_cross = r.chosen("cosine_sim_cross_attn", False)
    cos_self = r.chosen("cosine_sim_self_attn", False)
    if cos_cross and not semantics.has_cosine_sim_cross_attn:
        raise ConversionError(f"{what}: cosine_sim_cross_attn did not exist in release {semantics.version}.")
    if cos_self and not semantics.has_cosine_sim_self_attn:
        raise ConversionError(f"{what}: cosine_sim_self_attn did not exist in release {semantics.version}.")
    if weight_std and semantics.version < (1, 7, 0):
        raise ConversionError(f"{what}: resnet_weight_standardization did not exist in release {semantics.version}.")

    return {
        "dim": dim,
        "dim_mults": tuple(dim_mults),
        "in_channels": channels,
        "out_channels": out_rows,
        "init_dim": init_dim,
        "image_embed_dim": image_embed_dim,
        "text_embed_dim": text_embed_dim,
        "cond_dim": cond_dim,
        "num_image_tokens": num_image_tokens,
        "num_time_tokens": num_time_tokens,
        "self_attn": self_attn,
        "attn_dim_head": attn_dim_head,
        "attn_heads": attn_heads,
        "lowres_cond": lowres_cond,
        "lowres_noise_cond": lowres_noise_cond,
        "self_cond": self_cond,
        "sparse_attn": sparse_attn,
        "cond_on_text_encodings": cond_on_text,
        "max_text_len": max_text_len,
        "cond_on_image_embeds": cond_on_image,
        "add_image_embeds_to_time": to_hiddens,
        "init_cross_embed": init_cross_embed,
        "init_cross_embed_kernel_sizes": tuple(sorted(kernels)),
        "init_conv_kernel_size": init_kernel,
        "resnet_groups": resnet_groups,
        "resnet_weight_standardization": bool(weight_std),
        "num_resnet_blocks": num_resnet_blocks,
        "cross_embed_downsample_kernel_sizes": cross_kernels,
        "memory_efficient": memory_efficient,
        "scale_skip_connection": bool(scale_skip),
        "final_conv_kernel_size": final_kernel,
        "upsample_type": upsample_type,
        "downsample_type": downsample_type,
        **semantics.model_switches(cosine_sim_self_attn=bool(cos_self), cosine_sim_cross_attn=bool(cos_cross)),
    }


def _per(value, n):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


def convert_dalle2_decoder(
    state_dict: Mapping[str, torch.Tensor],
    *,
    version: str | None = None,
    source_version: str | None = None,
    config: Mapping | None = None,
    image_sizes: tuple[int, ...] | None = None,
) -> tuple[list[Dalle2UNet], list[dict], list[str]]:
    """
    Convert a ``Decoder`` state dict (``unets.{i}.*``, ``noise_schedulers.{i}.*``) into one :class:`Dalle2UNet`
    and one ``UnCLIPScheduler`` config per U-Net. Returns ``(unets, scheduler_configs, notes)``.
    """
    what = "DALLE2-pytorch decoder"
    notes: list[str] = []
    state = dict(state_dict)
    clip_keys = [k for k in state if k.startswith("clip.")]
    for key in clip_keys:
        del state[key]
    if clip_keys:
        notes.append(f"{len(clip_keys)} keys of the attached CLIP model (clip.*) were not converted")
    vae_keys = [k for k in state if k.startswith("vaes.")]
    if vae_keys:
        raise ConversionError(
            f"{what}: the decoder has VQGAN-VAE weights (latent diffusion), which are not supported:\n{format_keys(vae_keys)}"
        )
    num_unets = _count_indices(state, "unets.")
    schedules = [_consume_noise_scheduler(state, f"noise_schedulers.{u}.", f"{what} unet {u + 1}") for u in range(num_unets)]
    if _count_indices(state, "noise_schedulers.") > num_unets:
        raise ConversionError(f"{what}: more noise schedulers than unets.")
    lowres_noise = {}
    for u in range(num_unets):
        prefix = f"lowres_conds.{u}.noise_scheduler."
        if any(k.startswith(prefix) for k in state):
            lowres_noise[u] = _consume_noise_scheduler(state, prefix, f"{what} low-res conditioner {u + 1}")
    outside = [k for k in state if not k.startswith("unets.")]
    if outside:
        raise ConversionError(f"{what}: unexpected keys outside unets.* / noise_schedulers.* / clip.*:\n{format_keys(outside)}")

    layout = _decoder_layout(state)
    semantics = _resolve_version(
        "decoder", layout, version, source_version, notes, DECODER_LAYOUT_DEFAULTS, DECODER_LAYOUT_RANGES, decoder_semantics
    )
    decoder_cfg = _section(config, DECODER)
    unet_cfgs = list(decoder_cfg.get("unets") or [])
    if unet_cfgs and len(unet_cfgs) != num_unets:
        raise ConversionError(f"{what}: the config describes {len(unet_cfgs)} unets, the checkpoint has {num_unets}.")
    sizes = tuple(image_sizes) if image_sizes else tuple(decoder_cfg.get("image_sizes") or ())
    if not sizes and decoder_cfg.get("image_size") and num_unets == 1:
        sizes = (decoder_cfg["image_size"],)
    if sizes and len(sizes) != num_unets:
        raise ConversionError(f"{what}: {len(sizes)} image sizes given for {num_unets} unets.")
    if "timesteps" in decoder_cfg and any(t != decoder_cfg["timesteps"] for _, t in schedules):
        raise ConversionError(f"{what}: the config's timesteps={decoder_cfg['timesteps']} disagree with the saved schedules {schedules}.")
    config_schedules = decoder_cfg.get("beta_schedule")
    if config_schedules is not None:
        config_schedules = _per(config_schedules, num_unets)
        if tuple(config_schedules) != tuple(s for s, _ in schedules):
            raise ConversionError(f"{what}: the config's beta_schedule={list(config_schedules)} disagree with the saved schedules {[s for s, _ in schedules]}.")

    unets, scheds = [], []
    for u in range(num_unets):
        prefix = f"unets.{u}."
        unet = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if layout != "cross_attn":
            unet_view = {k.replace(".cross_attn.fn.", ".cross_attn."): v for k, v in unet.items()}
        else:
            unet_view = unet
        if semantics.layer_norm_type == "functional":
            unet_view = {re.sub(r"\.gamma$", ".g", re.sub(r"\.beta$", ".b", k)): v for k, v in unet_view.items()}
        unet_notes: list[str] = []
        cfg = _infer_unet_config(u, unet_view, semantics, unet_cfgs[u] if unet_cfgs else {}, decoder_cfg, unet_notes)
        if sizes:
            cfg["sample_size"] = int(sizes[u])
            unet_notes.append(f"sample_size = {sizes[u]} (from {'--image_sizes' if image_sizes else 'the config'})")
        elif u == 0:
            cfg["sample_size"] = 64
            unet_notes.append("sample_size = 64 (NOT inferable from the weights; LAION's decoders are 64 px — pass --image_sizes)")
        else:
            unet_notes.append("sample_size = None (NOT inferable; pass --image_sizes)")
        model = _meta_model(Dalle2UNet, cfg)
        model_state = model.state_dict()

        def to_source(key, prefix=prefix, model_state=model_state):
            name = key
            if semantics.layer_norm_type == "functional":
                if name.endswith(".g") and name[:-2] + ".b" in model_state:
                    name = name[:-2] + ".gamma"
                elif name.endswith(".b") and name[:-2] + ".g" in model_state:
                    name = name[:-2] + ".beta"
            if layout != "cross_attn" and ".cross_attn." in name:
                name = name.replace(".cross_attn.", ".cross_attn.fn.")
            return prefix + name

        rules = _mapped_rules(DECODER, model_state, to_source, lambda key, cfg=cfg: _unet_why(key, cfg))
        source_unet = {prefix + k: v for k, v in unet.items()}
        converted = apply_rules(source_unet, rules, f"{what} unet {u + 1}", context=f" (DALLE2-pytorch {cfg['source_version']})")
        model = _finish(model, converted[DECODER], f"{what} unet {u + 1}")
        unets.append(model)

        unet_cfg = unet_cfgs[u] if unet_cfgs else {}
        predict_x_start = _per(decoder_cfg.get("predict_x_start", False), num_unets)[u]
        predict_v = _per(decoder_cfg.get("predict_v", False), num_unets)[u]
        if decoder_cfg.get("use_dynamic_thres"):
            raise ConversionError(f"{what}: use_dynamic_thres=True (dynamic thresholding) is not available in UnCLIPScheduler.")
        if decoder_cfg.get("learned_variance_constrain_frac"):
            raise ConversionError(f"{what}: learned_variance_constrain_frac=True is not available in UnCLIPScheduler.")
        config_lv = decoder_cfg.get("learned_variance")
        learned_variance = cfg["out_channels"] == 2 * cfg["in_channels"]
        if config_lv is not None and bool(_per(config_lv, num_unets)[u]) != learned_variance:
            raise ConversionError(
                f"{what} unet {u + 1}: the config's learned_variance={_per(config_lv, num_unets)[u]} but to_out has "
                f"{cfg['out_channels']} channels for {cfg['in_channels']} image channels."
            )
        prediction = "v_prediction" if predict_v else ("sample" if predict_x_start else "epsilon")
        schedule, timesteps = schedules[u]
        scheds.append(
            scheduler_config(
                schedule, timesteps, prediction=prediction, learned_variance=learned_variance, clip_range=1.0,
                what=f"{what} unet {u + 1}",
            )
        )
        unet_notes.append(f"noise schedule: {schedule}, {timesteps} steps; prediction: {prediction}")
        if u in lowres_noise:
            unet_notes.append(
                "low-res conditioning uses Imagen-style noising (linear schedule, sampled at level "
                f"{decoder_cfg.get('lowres_noise_sample_level', 0.2)}); pass lowres_noise_level to the U-Net"
            )
        if unet_cfg:
            unknown = set(unet_cfg) - _KNOWN_UNET_CONFIG
            if unknown:
                unet_notes.append(f"config keys not used by the conversion: {sorted(unknown)}")
        notes.append(f"unet {u + 1}:")
        notes.extend("  " + n for n in unet_notes)
    return unets, scheds, notes


_KNOWN_UNET_CONFIG = {
    "dim", "dim_mults", "image_embed_dim", "text_embed_dim", "cond_on_text_encodings", "cond_dim", "channels",
    "self_attn", "attn_dim_head", "attn_heads", "init_cross_embed", "init_cross_embed_kernel_sizes",
    "init_conv_kernel_size", "num_time_tokens", "num_image_tokens", "num_resnet_blocks", "resnet_groups",
    "resnet_weight_standardization", "sparse_attn", "memory_efficient", "scale_skip_connection",
    "cosine_sim_cross_attn", "cosine_sim_self_attn", "cross_embed_downsample", "cross_embed_downsample_kernel_sizes",
    "pixel_shuffle_upsample", "max_text_len", "self_cond", "final_conv_kernel_size", "init_dim",
}


# --------------------------------------------------------------------------------------------------------------------
# end to end


@dataclass
class Dalle2ConversionResult:
    """What :func:`convert_dalle2_to_diffusers` converted (and wrote, when a ``dump_path`` was given)."""

    kind: str
    entry: str
    source_version: str
    models: dict[str, Any]
    schedulers: dict[str, dict]
    notes: list[str] = field(default_factory=list)
    dump_path: str | None = None

    def summary(self) -> str:
        lines = [f"DALLE2-pytorch {self.kind} (weights: '{self.entry}'), release {self.source_version}"]
        for name, model in self.models.items():
            count = sum(p.numel() for p in model.parameters())
            lines.append(f"  {name}: {type(model).__name__}, {len(model.state_dict())} tensors, {count / 1e6:.2f}M parameters")
        for name, sched in self.schedulers.items():
            lines.append(
                f"  {name}: UnCLIPScheduler {sched['beta_schedule']}, {sched['num_train_timesteps']} steps, "
                f"{sched['prediction_type']}, {sched['variance_type']}, clip_sample={sched['clip_sample']}"
            )
        lines.append("  how each value was found:")
        lines.extend(f"    {note}" for note in self.notes)
        if self.dump_path:
            lines.append(f"  written to {self.dump_path} (safetensors)")
        return "\n".join(lines)


def _stage_names(num_unets: int) -> list[tuple[str, str]]:
    names = [("decoder", "decoder_scheduler")]
    for i in range(1, num_unets):
        tag = "super_res" if i == 1 else f"super_res_{i}"
        names.append((f"{tag}_first", f"{tag}_scheduler"))
    return names


def convert_dalle2_to_diffusers(
    checkpoint_path: str | os.PathLike,
    dump_path: str | os.PathLike | None = None,
    *,
    kind: str = "auto",
    weights: str = "auto",
    config=None,
    source_version: str | None = None,
    image_sizes: tuple[int, ...] | None = None,
    allow_pickle: bool = False,
) -> Dalle2ConversionResult:
    """
    Convert one DALLE2-pytorch file. A prior becomes ``prior/`` (:class:`Dalle2PriorNetwork`) and
    ``prior_scheduler/``; a decoder becomes ``decoder/`` (+ ``decoder_scheduler/``) for its first U-Net and
    ``super_res_first/``, ``super_res_2_first/``, ... (+ ``super_res_scheduler/``, ``super_res_2_scheduler/``) for
    its upsamplers, named as this package's pipelines name their stages. Nothing is written unless everything
    converted.
    """
    container = load_dalle2_checkpoint(checkpoint_path, allow_pickle=allow_pickle)
    state_dict, found_kind, entry = select_state_dict(container, weights)
    if kind not in ("auto", PRIOR, DECODER):
        raise ConversionError(f"kind must be 'auto', 'prior' or 'decoder', got {kind!r}.")
    if kind != "auto" and kind != found_kind:
        raise ConversionError(f"--kind {kind} given, but the checkpoint holds a {found_kind} ({'net.*' if found_kind == PRIOR else 'unets.*'} keys).")
    version = read_version(container)
    embedded = container.get("config") if isinstance(container.get("config"), Mapping) else None
    given = load_config(config)
    if given is not None and embedded is not None:
        notes_cfg = "the --config file (the checkpoint's embedded config was ignored)"
    elif given is not None:
        notes_cfg = "the --config file"
    elif embedded is not None:
        given, notes_cfg = dict(embedded), "the config embedded in the checkpoint"
    else:
        notes_cfg = None

    if found_kind == PRIOR:
        model, sched, notes = convert_dalle2_prior(state_dict, version=version, source_version=source_version, config=given)
        models, schedulers = {"prior": model}, {"prior_scheduler": sched}
    else:
        unets, scheds, notes = convert_dalle2_decoder(
            state_dict, version=version, source_version=source_version, config=given, image_sizes=image_sizes
        )
        models, schedulers = {}, {}
        for (model_name, sched_name), unet, sched in zip(_stage_names(len(unets)), unets, scheds):
            models[model_name], schedulers[sched_name] = unet, sched
    if notes_cfg:
        notes.insert(0, f"config: {notes_cfg}")
    source = next(iter(models.values())).config.source_version
    result = Dalle2ConversionResult(found_kind, entry, source, models, schedulers, notes)
    if dump_path is not None:
        from ..schedulers import UnCLIPScheduler

        dump_path = os.fspath(dump_path)
        for name, sched in schedulers.items():  # build first: an invalid scheduler config fails before any write
            UnCLIPScheduler.from_config({k: v for k, v in sched.items() if k != "_class_name"})
        os.makedirs(dump_path, exist_ok=True)
        for name, model in models.items():
            model.save_pretrained(os.path.join(dump_path, name), safe_serialization=True)
        for name, sched in schedulers.items():
            UnCLIPScheduler.from_config({k: v for k, v in sched.items() if k != "_class_name"}).save_pretrained(
                os.path.join(dump_path, name)
            )
        result.dump_path = dump_path
    return result
