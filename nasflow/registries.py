"""The engine's registries: one generic, lazy name -> class/factory ``Registry``, and the named
registries, each filled by its engine module or by plugin entry points.

Entries come from three places, all resolved only when first asked for:

* ``@REGISTRY.register("name")`` on a class or factory inside an already imported module;
* entry points of the registry's group (how built-in plugins and third-party packages plug in);
* a ``"package.module:attr"`` string used in place of a name (e.g. in a YAML config).

This module imports only :mod:`nasflow.errors`: every layer may use it.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from nasflow.errors import ConfigError, RegistryError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered value, or the import path it will be loaded from."""

    name: str
    target: T | None = None
    path: str | None = None  # "module:attr", loaded on first use
    description: str = ""


def import_path(path: str) -> object:
    """Import ``"package.module:attr"`` (``attr`` may be dotted); errors name the path."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"'{path}' is not of the form 'package.module:attr'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import module '{module_name}' (from '{path}'): {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"module '{module_name}' has no attribute '{attr}' (from '{path}')") from None
    return obj


def _first_doc_line(obj: object) -> str:
    summary = getattr(obj, "summary", None)  # registered instances (e.g. shipped models) describe themselves
    if isinstance(summary, str) and summary.strip():
        return summary.strip().splitlines()[0]
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """Name -> class or factory, filled lazily.

    ``builtin_modules`` are imported the first time the registry is read, so that their
    ``@register`` decorators run; ``group`` names the entry-point group scanned at that time.
    """

    def __init__(self, kind: str, group: str | None = None, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.group = group
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    # -- filling -----------------------------------------------------------------------------
    def register(self, name: str | None = None, *, description: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@OPS.register("conv_3x3")``; the name defaults to ``__name__``."""

        def decorate(target: T) -> T:
            self.add(name or getattr(target, "__name__"), target, description=description)
            return target

        return decorate

    def add(self, name: str, target: T, *, description: str | None = None) -> None:
        existing = self._entries.get(name)
        if existing is not None and existing.target is not None and existing.target is not target:
            raise RegistryError(f"{self.kind} '{name}' is already registered ({existing.target!r})")
        desc = description if description is not None else _first_doc_line(target)
        self._entries[name] = Entry(name, target=target, description=desc)

    def add_lazy(self, name: str, path: str, *, description: str = "") -> None:
        """Register ``"module:attr"`` to be imported on first use (keeps imports cheap)."""
        if name not in self._entries:
            self._entries[name] = Entry(name, path=path, description=description)

    # -- reading -----------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        if self.group:
            for ep in entry_points(group=self.group):
                self.add_lazy(ep.name, ep.value)

    def get(self, name: str) -> T:
        """The value registered under ``name``; a ``module:attr`` string is imported directly."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        self._ensure_loaded()
        entry = self._entries.get(name)
        if entry is None:
            if ":" in name:
                return import_path(name)  # type: ignore[return-value]
            raise RegistryError(self.unknown_message(name))
        if entry.target is None:
            assert entry.path is not None
            target = import_path(entry.path)
            desc = entry.description or _first_doc_line(target)
            entry = Entry(name, target=target, description=desc)  # type: ignore[arg-type]
            self._entries[name] = entry
        return entry.target  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        """'unknown <kind> NAME; did you mean ...? Known: ...' (for callers with their own lookups)."""
        self._ensure_loaded()
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listing = ", ".join(known) if known else "(none registered)"
        return f"unknown {self.kind} '{name}'{hint} Known: {listing}"

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line description) for ``nasflow list``; loads every entry."""
        rows = []
        for name in self.names():
            try:
                self.get(name)
                rows.append((name, self._entries[name].description))
            except RegistryError as exc:
                rows.append((name, f"(unloadable: {exc})"))
        return rows

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"



def resolve(registry: Registry[T], name: str, key: str) -> T:
    """``registry.get(name)`` for the config key ``key``: an unknown name is a ConfigError naming it."""
    try:
        return registry.get(name)
    except RegistryError as exc:
        raise ConfigError(f"{key}: {exc}") from None


# -- the engine's registries ---------------------------------------------------------------------
OPS: Registry[Any] = Registry("op", group="nasflow.ops", builtin_modules=("nasflow.core.ops",))
RELAXATIONS: Registry[Any] = Registry("relaxation", group="nasflow.relaxations", builtin_modules=("nasflow.core.mixed",))
DERIVE_RULES: Registry[Any] = Registry("derive rule", group="nasflow.derive_rules", builtin_modules=("nasflow.core.derive",))
SPACES: Registry[Any] = Registry("search space", group="nasflow.spaces")
STRATEGIES: Registry[Any] = Registry("strategy", group="nasflow.strategies")
HYPERGRADIENTS: Registry[Any] = Registry("hypergradient", group="nasflow.hypergradients", builtin_modules=("nasflow.search.hypergrad",))
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
