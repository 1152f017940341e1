"""Trained models as files: what a model file holds, shipped models, and loading one.

A model file (``model.pt`` of a run, a shipped model, an imported checkpoint) holds a state
dict, a genotype and a config; its schema, writer, reader and rebuild live in
:mod:`nasflow.run.modelfile`. Nothing in a model file can name code to import: its task must be a
registered task (never a ``module:attr`` path), so loading a file from elsewhere runs only
installed code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasflow.errors import ConfigError
from nasflow.registries import MODELS
from nasflow.run.modelfile import MODEL_FILE, read_model_file, rebuild


@dataclass(frozen=True)
class ShippedModel:
    """A trained model that ships inside a package, registered under the ``nasflow.models`` entry-point group.

    ``package``/``file``: where the weights are (``importlib.resources``); ``card``: its model card
    (Markdown, next to the weights) saying what data trained it, the exact command and metrics.
    """

    name: str
    package: str
    file: str
    summary: str
    card: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    def path(self) -> Path:
        return Path(str(resources.files(self.package).joinpath(self.file)))

    def card_path(self) -> Path | None:
        return Path(str(resources.files(self.package).joinpath(self.card))) if self.card else None


@dataclass
class LoadedModel:
    """A model file rebuilt: the task that defines its forward pass and the compiled network."""

    task: Any
    network: nn.Module
    genotype: Any
    config: Any
    meta: dict[str, Any]
    source: str
    notes: list[str] = field(default_factory=list)  # one-line remarks on how the model was found


def default_model_name() -> str:
    """The shipped model tagged ``default`` (what ``nasflow enhance`` uses without ``--model``)."""
    for name in MODELS.names():
        if ":" not in name and "default" in getattr(MODELS.get(name), "tags", ()):
            return name
    raise ConfigError("no shipped model is tagged 'default'; pass --model NAME|PATH (see nasflow list models)")


def _model_file_at(path: Path) -> Path | None:
    """The model file a path names: the file itself, or a run folder's ``model.pt``."""
    if path.is_file():
        return path
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    return None


def resolve_model(spec: str | Path, notes: list[str] | None = None) -> Path:
    """A model file from a shipped model's name, a model file, or a finished run folder.

    A name that is both a shipped model and a path (a folder ``ruas-lol/`` where the command runs)
    is the path only when that holds a model file; otherwise it is the shipped model. Either way a
    one-line remark is appended to ``notes``: a stray folder must not hide a shipped model silently.
    """
    path = Path(spec)
    name = str(spec)
    shipped_name = ":" not in name and name in MODELS  # shipped names only, never an import path
    found = _model_file_at(path)
    if found is not None:
        if shipped_name and notes is not None:
            notes.append(f"'{name}' is {found} here, not the shipped model of that name")
        return found
    if shipped_name:
        shipped: ShippedModel = MODELS.get(name)
        if not shipped.path().is_file():
            raise ConfigError(f"model '{name}' is registered but its weights file {shipped.path()} is missing")
        if path.exists() and notes is not None:
            notes.append(f"{path} holds no model file (no model.pt): '{name}' is the shipped model")
        return shipped.path()
    if path.is_dir():
        raise ConfigError(f"{path} is a folder without model.pt (not a finished run folder)")
    raise ConfigError(f"model '{name}' is neither a file nor a run folder, and {MODELS.unknown_message(name)}")


def load_network(spec: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the compiled network of a model file (:func:`nasflow.run.modelfile.rebuild`), in eval mode."""
    notes: list[str] = []
    path = resolve_model(spec, notes)
    saved = read_model_file(path)
    rebuilt = rebuild(saved, device, str(path))
    meta = saved.get("meta") if isinstance(saved.get("meta"), dict) else {}
    return LoadedModel(task=rebuilt.task, network=rebuilt.network.eval(), genotype=rebuilt.genotype,
                       config=rebuilt.config, meta=dict(meta), source=str(path), notes=notes)
