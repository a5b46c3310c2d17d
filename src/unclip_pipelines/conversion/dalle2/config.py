"""
Resolving values: the training config (``{"prior": ...}`` / ``{"decoder": ...}``), the source release, and each
architecture value from the weights, the config or DALLE2-pytorch's defaults (noting where it came from).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from ..common import ConversionError
from .checkpoints import DECODER, PRIOR
from .versions import format_version, parse_version


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

