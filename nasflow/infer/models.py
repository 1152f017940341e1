"""Trained models as files: what a model file holds, shipped models, and loading one.

A model file (``model.pt`` of a run, a shipped model, an imported checkpoint) is a torch file
holding plain data only, loaded with ``weights_only=True``::

    {"state_dict": {name: tensor}, "genotype": {...}, "config": {...RunConfig...}, "meta": {...}}

The config says which task rebuilds the network; the genotype says which ops; the state dict
fills it. Nothing in a model file can name code to import: its task must be a registered task
(never a ``module:attr`` path), so loading a file from elsewhere runs only installed code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasflow.errors import ConfigError, GenotypeError
from nasflow.registries import MODELS, TASKS

MODEL_KEYS = ("state_dict", "genotype", "config")


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
    if path.is_dir() and (path / "model.pt").is_file():
        return path / "model.pt"
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


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The plain-data content of a model file, checked for the keys a model needs."""
    from nasflow.run.checkpoint import load_safe

    path = Path(path)
    try:
        saved = load_safe(path)
    except FileNotFoundError:
        raise ConfigError(f"model file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file, said in one line
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{path} is not a loadable nasflow model file ({type(exc).__name__}: {reason})") from None
    if not isinstance(saved, dict) or any(k not in saved for k in MODEL_KEYS):
        found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise ConfigError(f"{path} is not a nasflow model file: expected keys {list(MODEL_KEYS)}, found {found}")
    return saved


def load_network(spec: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the compiled network of a model file (see the module docstring)."""
    from nasflow.core.compile import compile_model
    from nasflow.config import from_dict
    from nasflow.core.genotype import Genotype
    from nasflow.task import build_task
    from nasflow.schema import RunConfig

    notes: list[str] = []
    path = resolve_model(spec, notes)
    saved = read_model_file(path)
    config = saved["config"]
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: its config is not a mapping")
    task_name = config.get("task")
    if not isinstance(task_name, str) or ":" in task_name or task_name not in TASKS:
        raise ConfigError(f"{path}: its task {task_name!r} is not an installed task "
                          f"(model files may only name registered tasks: {', '.join(TASKS.names())})")
    cfg = from_dict(RunConfig, config, "config")
    try:
        genotype = Genotype.from_dict(saved["genotype"])
    except GenotypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    task = build_task(cfg, torch.device(device))
    torch.manual_seed(0)  # the weights are overwritten below; keep construction deterministic
    network = compile_model(task.build_supernet(), genotype)
    _load_weights(network, saved["state_dict"], path)
    network.to(device).eval()
    meta = saved.get("meta") if isinstance(saved.get("meta"), dict) else {}
    return LoadedModel(task=task, network=network, genotype=genotype, config=cfg, meta=dict(meta), source=str(path),
                       notes=notes)


def _load_weights(network: nn.Module, state: Any, path: Path) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: state_dict is not a mapping of tensors")
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        first = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise ConfigError(f"{path}: weights do not match the network of its genotype and config "
                          f"({len(missing)} missing, {len(unexpected)} unexpected; first: {first})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ConfigError(f"{path}: weight '{key}' has shape {tuple(tensor.shape)}, the network needs "
                              f"{tuple(own[key].shape)}")
    network.load_state_dict(state)
