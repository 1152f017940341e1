"""Genotypes: the discrete architecture a search found, as plain, versioned data.

JSON on disk looks like::

    {"schema": 1, "space": "distill",
     "cells": {"iem": [{"op": "skip_connect", "src": "x", "dst": "d1"}, ...]},
     "meta": {"rule": "argmax_per_edge"}}

Files are parsed with ``json``/``yaml.safe_load`` only: never ``eval``, never pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from nasflow.errors import GenotypeError, yaml_problem

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class GenoEdge:
    """One chosen edge: ``op`` applied to node ``src``, summed into node ``dst``."""

    op: str
    src: str
    dst: str


@dataclass(frozen=True)
class Genotype:
    """Chosen edges per label (e.g. ``{"iem": (...), "nrm": (...)}``) of one search space."""

    space: str
    cells: tuple[tuple[str, tuple[GenoEdge, ...]], ...]
    schema: int = SCHEMA_VERSION
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_cells(
        cls, space: str, cells: Mapping[str, Iterable[GenoEdge]], meta: Mapping[str, Any] | None = None
    ) -> "Genotype":
        return cls(space, tuple((label, tuple(edges)) for label, edges in cells.items()), meta=dict(meta or {}))

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.cells)

    def edges(self, label: str) -> tuple[GenoEdge, ...]:
        for name, edges in self.cells:
            if name == label:
                return edges
        raise GenotypeError(f"genotype has no cell labelled '{label}' (labels: {', '.join(self.labels)})")

    def ops(self, label: str) -> list[str]:
        return [e.op for e in self.edges(label)]

    # -- plain data ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "space": self.space,
            "cells": {label: [{"op": e.op, "src": e.src, "dst": e.dst} for e in edges] for label, edges in self.cells},
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Genotype":
        """Validate the shape of plain data; every error names the offending field."""
        if not isinstance(data, Mapping):
            raise GenotypeError(f"genotype must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {"schema", "space", "cells", "meta"}
        if unknown:
            raise GenotypeError(f"unknown genotype field(s): {', '.join(sorted(map(str, unknown)))}")
        schema = data.get("schema")
        if type(schema) is not int or schema != SCHEMA_VERSION:  # bool/float compare equal to 1
            raise GenotypeError(f"field 'schema': expected version {SCHEMA_VERSION}, got {schema!r}")
        space = data.get("space")
        if not isinstance(space, str) or not space:
            raise GenotypeError(f"field 'space': expected a non-empty string, got {space!r}")
        cells = data.get("cells")
        if not isinstance(cells, Mapping) or not cells:
            raise GenotypeError("field 'cells': expected a non-empty mapping of label -> list of edges")
        meta = data.get("meta", {})
        if not isinstance(meta, Mapping):
            raise GenotypeError("field 'meta': expected a mapping")
        parsed: dict[str, list[GenoEdge]] = {}
        for label, edges in cells.items():
            where = f"cells.{label}"
            if not isinstance(label, str) or not label:
                raise GenotypeError(f"field 'cells': labels must be non-empty strings, got {label!r}")
            if not isinstance(edges, list):
                raise GenotypeError(f"field '{where}': expected a list of edges")
            parsed[label] = [_parse_edge(edge, f"{where}[{i}]") for i, edge in enumerate(edges)]
        return cls.from_cells(space, parsed, meta)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "Genotype":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise GenotypeError(f"not valid YAML{yaml_problem(exc)}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        text = self.to_yaml() if path.suffix in {".yaml", ".yml"} else self.to_json()
        path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Genotype":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GenotypeError(f"genotype file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GenotypeError(f"cannot read genotype file {path}: {exc}") from None
        try:
            if path.suffix in {".yaml", ".yml"}:
                return cls.from_yaml(text)
            return cls.from_json(text)
        except GenotypeError as exc:
            raise GenotypeError(f"{path}: {exc}") from None


def _parse_edge(edge: Any, where: str) -> GenoEdge:
    if not isinstance(edge, Mapping):
        raise GenotypeError(f"field '{where}': expected a mapping with op, src, dst")
    missing = [k for k in ("op", "src", "dst") if k not in edge]
    if missing:
        raise GenotypeError(f"field '{where}': missing {', '.join(missing)}")
    extra = set(edge) - {"op", "src", "dst"}
    if extra:
        raise GenotypeError(f"field '{where}': unknown key(s) {', '.join(sorted(map(str, extra)))}")
    for key in ("op", "src", "dst"):
        if not isinstance(edge[key], str) or not edge[key]:
            raise GenotypeError(f"field '{where}.{key}': expected a non-empty string, got {edge[key]!r}")
    return GenoEdge(edge["op"], edge["src"], edge["dst"])
