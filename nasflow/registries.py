"""The engine's registries. Each is filled by its engine module or by plugin entry points."""

from __future__ import annotations

from typing import Any

from nasflow.registry import Registry

OPS: Registry[Any] = Registry("op", group="nasflow.ops", builtin_modules=("nasflow.ops",))
RELAXATIONS: Registry[Any] = Registry("relaxation", group="nasflow.relaxations", builtin_modules=("nasflow.mixed",))
DERIVE_RULES: Registry[Any] = Registry("derive rule", group="nasflow.derive_rules", builtin_modules=("nasflow.derive",))
SPACES: Registry[Any] = Registry("search space", group="nasflow.spaces")
STRATEGIES: Registry[Any] = Registry("strategy", group="nasflow.strategies")
HYPERGRADIENTS: Registry[Any] = Registry("hypergradient", group="nasflow.hypergradients", builtin_modules=("nasflow.hypergrad",))
TASKS: Registry[Any] = Registry("task", group="nasflow.tasks")
LOSSES: Registry[Any] = Registry("loss", group="nasflow.losses")
DATASETS: Registry[Any] = Registry("dataset", group="nasflow.datasets")
MODELS: Registry[Any] = Registry("model", group="nasflow.models")
COMMANDS: Registry[Any] = Registry("command", group="nasflow.commands")

ALL = {
    "ops": OPS,
    "relaxations": RELAXATIONS,
    "derive_rules": DERIVE_RULES,
    "spaces": SPACES,
    "strategies": STRATEGIES,
    "hypergradients": HYPERGRADIENTS,
    "tasks": TASKS,
    "losses": LOSSES,
    "datasets": DATASETS,
    "models": MODELS,
    "commands": COMMANDS,
}
