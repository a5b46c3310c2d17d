"""What every unCLIP pipeline shares: component registration, Karlo-folder loading and checks."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import types

from diffusers import DiffusionPipeline
from diffusers import UnCLIPScheduler as DiffusersUnCLIPScheduler
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging
from huggingface_hub import create_repo

from ..models.text_proj import UnCLIPTextProjModel
from ..schedulers.scheduling_unclip import UnCLIPScheduler
from .model_card import write_model_card

logger = logging.get_logger(__name__)

#: file in a model folder holding the sampling settings its author recommends (``__call__`` keyword arguments)
SAMPLING_DEFAULTS_FILE = "sampling_defaults.json"

_DOWNLOAD_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "variant")


def read_sampling_defaults(folder: str) -> dict:
    """The recommended sampling settings stored with a model (``{}`` when it has none)."""
    path = os.path.join(folder, SAMPLING_DEFAULTS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def register_karlo_library() -> None:
    """
    Karlo's ``model_index.json`` names its text projection ``["unclip", "UnCLIPTextProjModel"]`` (the module it had
    in diffusers before the deprecation). diffusers resolves a library it does not know from ``sys.modules``, so a
    module called ``unclip`` exposing our class makes those folders load unchanged.
    """
    if "unclip" in sys.modules and hasattr(sys.modules["unclip"], "UnCLIPTextProjModel"):
        return
    module = types.ModuleType("unclip", "Karlo-layout alias provided by unclip_pipelines.")
    module.UnCLIPTextProjModel = UnCLIPTextProjModel
    module.UnCLIPScheduler = UnCLIPScheduler
    # diffusers picks the loading method by the base classes the library exposes
    module.ModelMixin = ModelMixin
    module.SchedulerMixin = SchedulerMixin
    sys.modules["unclip"] = module


class UnCLIPPipelineBase(DiffusionPipeline):
    """Base of the unCLIP pipelines. Not used directly."""

    _callback_tensor_inputs = ["latents", "model_output"]
    #: recommended ``__call__`` settings read from ``sampling_defaults.json`` (the CLI applies them)
    sampling_defaults: dict = {}
    _stage: str | None = None
    _num_timesteps: int | None = None

    def register_unclip_modules(self, **components) -> None:
        """``register_modules``, converting diffusers' deprecated ``UnCLIPScheduler`` (Karlo folders) to ours."""
        for name, component in components.items():
            if isinstance(component, DiffusersUnCLIPScheduler) and not isinstance(component, UnCLIPScheduler):
                components[name] = UnCLIPScheduler.from_config(component.config)
        self.register_modules(**components)
        # record our classes under Karlo's library name ("unclip"), not under our private module paths
        self.register_to_config(
            **{
                name: ("unclip", type(component).__name__)
                for name, component in components.items()
                if isinstance(component, (UnCLIPTextProjModel, UnCLIPScheduler))
            }
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """``DiffusionPipeline.save_pretrained`` plus a model card (``README.md``) describing the pipeline."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.sampling_defaults:
            with open(os.path.join(save_directory, SAMPLING_DEFAULTS_FILE), "w", encoding="utf-8") as handle:
                json.dump(self.sampling_defaults, handle, indent=2)
        if not os.path.exists(os.path.join(save_directory, "README.md")):
            write_model_card(self, str(save_directory))

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        description: str | None = None,
    ) -> str:
        """Save the pipeline (safetensors) with an unCLIP model card and upload it to the Hub repo ``repo_id``."""
        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            super().save_pretrained(folder, safe_serialization=safe_serialization, variant=variant)
            write_model_card(self, folder, repo_id=repo_id, description=description)
            return self._upload_folder(folder, repo_id, token=token, commit_message=commit_message, create_pr=create_pr)

    @property
    def stage(self) -> str | None:
        """The stage being sampled ("prior", "decoder", "super_res_1", ...), e.g. for ``callback_on_step_end``."""
        return self._stage

    @property
    def num_timesteps(self) -> int | None:
        """Number of timesteps of the stage being (or last) sampled."""
        return self._num_timesteps

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """
        Load a diffusers folder or Hub repo, including folders in Karlo's layout (``kakaobrain/karlo-v1-alpha``), and
        check first that it holds every component this pipeline needs.
        """
        folder = str(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            download_kwargs = {key: kwargs[key] for key in _DOWNLOAD_KWARGS if key in kwargs}
            folder = cls.download(folder, **download_kwargs)
        cls.check_model_folder(folder, passed=set(kwargs))
        pipe = super().from_pretrained(folder, **kwargs)
        pipe.sampling_defaults = read_sampling_defaults(folder)
        return pipe

    @classmethod
    def check_model_folder(cls, folder: str, passed: set[str] = frozenset()) -> None:
        """Raise a ``ValueError`` naming every required component that ``folder`` lacks."""
        index_path = os.path.join(folder, "model_index.json")
        if not os.path.isfile(index_path):
            raise ValueError(
                f"{folder} has no model_index.json, so it is not a diffusers pipeline folder. Point to the folder "
                "written by `save_pretrained` (or a Karlo-layout folder)."
            )
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
        required, _ = cls._get_signature_keys(cls)
        problems = []
        for name in required:
            if name in passed or name in cls._optional_components:
                continue
            entry = index.get(name)
            if not entry or entry[0] is None:
                problems.append(f"`{name}` is not listed in model_index.json")
            elif not os.path.isdir(os.path.join(folder, name)):
                problems.append(f"`{name}/` is missing")
        if problems:
            raise ValueError(
                f"{folder} cannot be loaded as {cls.__name__}: " + "; ".join(problems) + ". Add the missing component "
                "folder(s) (e.g. with `component.save_pretrained(folder/name)`) or pass them to `from_pretrained` "
                "as keyword arguments."
            )


register_karlo_library()
