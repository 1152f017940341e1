"""The model file: one schema, one writer, one reader, one rebuild.

A model file (``model.pt`` of a run, a shipped model, an imported checkpoint) is a torch file
holding plain data only, loaded with ``weights_only=True``::

    {"state_dict": {name: tensor}, "genotype": {...}, "config": {...RunConfig...}, "meta": {...}}

The config says which task rebuilds the network; the genotype says which ops; the state dict
fills it. The runner writes it at the end of a run and ``nasflow import-ruas`` when it converts a
released checkpoint; :func:`nasflow.load_model` (``nasflow.infer.models``), ``nasflow eval`` and the
importer's self-check read and rebuild it. All of them go through this module, so the layout and
the checks are stated once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasflow.config import from_dict
from nasflow.core.compile import compile_model
from nasflow.core.genotype import Genotype
from nasflow.errors import ConfigError, GenotypeError, RegistryError
from nasflow.registries import TASKS
from nasflow.run.checkpoint import load_safe, load_state_checked, save_atomic
from nasflow.schema import RunConfig
from nasflow.task import Task, build_task

MODEL_FILE = "model.pt"
"""A run folder's model file."""

MODEL_KEYS = ("state_dict", "genotype", "config")
"""What every model file holds (``meta`` is optional)."""


def model_payload(state_dict: Mapping[str, torch.Tensor], genotype: Mapping[str, Any], config: Mapping[str, Any],
                  meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plain data of a model file; tensors moved to the CPU so the file loads without a GPU."""
    saved: dict[str, Any] = {
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "genotype": dict(genotype),
        "config": dict(config),
    }
    if meta is not None:
        saved["meta"] = dict(meta)
    return saved


def save_model_file(saved: Mapping[str, Any], path: str | Path) -> Path:
    """Write a model file (see :func:`model_payload`) atomically; a payload lacking a key is a bug."""
    missing = [k for k in MODEL_KEYS if k not in saved]
    if missing:
        raise ValueError(f"a model file needs {list(MODEL_KEYS)}; missing {missing}")
    return save_atomic(dict(saved), path)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The plain-data content of a model file, checked for the keys a model needs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist")
    try:
        saved = load_safe(path)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file, said in one line
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{path} is not a loadable nasflow model file ({type(exc).__name__}: {reason})") from None
    if not isinstance(saved, dict) or any(k not in saved for k in MODEL_KEYS):
        found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise ConfigError(f"{path} is not a nasflow model file: expected keys {list(MODEL_KEYS)}, found {found}")
    return saved


def file_config(saved: Mapping[str, Any], where: str) -> RunConfig:
    """The config inside a model file; its task must be an installed task, never an import path."""
    config = saved["config"]
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: its config is not a mapping")
    task_name = config.get("task")
    if not isinstance(task_name, str) or ":" in task_name or task_name not in TASKS:
        raise ConfigError(f"{where}: its task {task_name!r} is not an installed task "
                          f"(model files may only name registered tasks: {', '.join(TASKS.names())})")
    return from_dict(RunConfig, config, "config")


@dataclass
class Rebuilt:
    """A model file rebuilt: the task that defines the network's forward pass, the network, and what built them."""

    task: Task
    network: nn.Module
    genotype: Genotype
    config: RunConfig


def rebuild(saved: Mapping[str, Any], device: torch.device | str, where: str, *, config: RunConfig | None = None,
            trusted: bool = False, allowed_paths: Collection[str] = (), seed: int | None = 0) -> Rebuilt:
    """The compiled network of a model file's content, its weights loaded (strict: names and shapes).

    ``config``: the config that builds the task; by default the file's own (:func:`file_config`,
    so it may name only installed code). ``nasflow eval`` passes its run folder's ``config.yaml``
    with ``trusted`` and the import paths that config names (``allowed_paths``), as the runner
    does. ``seed``: seeds torch before the supernet is built (its weights are overwritten; this
    keeps construction deterministic); ``None`` leaves the RNG to the caller.
    """
    cfg = config if config is not None else file_config(saved, where)
    try:
        genotype = Genotype.from_dict(saved["genotype"], allowed_paths=allowed_paths)
    except GenotypeError as exc:
        raise GenotypeError(f"{where}: {exc}") from None
    device = torch.device(device)
    task = build_task(cfg, device, trusted=trusted)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        network = compile_model(task.build_supernet(), genotype)
    except (GenotypeError, RegistryError) as exc:
        raise GenotypeError(f"{where}: its genotype does not fit its config: {exc}") from None
    load_state_checked(network, saved["state_dict"], where)
    return Rebuilt(task=task, network=network.to(device), genotype=genotype, config=cfg)
