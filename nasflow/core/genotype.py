"""Genotypes: the discrete architecture a search found, as plain, versioned data.

JSON on disk looks like::

    {"schema": 1, "space": "distill",
     "cells": {"iem": [{"op": "skip_connect", "src": "x", "dst": "d1"}, ...]},
     "meta": {"rule": "argmax_per_edge"}}

Files are parsed with ``json``/``yaml.safe_load`` only: never ``eval``, never pickle. A genotype is
data and can never name code: an op or space name shaped like ``package.module:attr`` (which a
registry would import) is refused when a genotype is read, unless the caller passes it in
``allowed_paths`` because the user's own config names it (e.g. a candidate op given as an import
path). Genotype files are written atomically (temp file, then rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping

from nasflow.atomic import write_text_atomic
from nasflow.errors import GenotypeError

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
    def from_dict(cls, data: Any, *, allowed_paths: Collection[str] = ()) -> "Genotype":
        """Validate the shape of plain data; every error names the offending field.

        Op and space names must not be ``module:attr`` import paths, except those in
        ``allowed_paths`` (names the user's config itself gives as import paths).
        """
        from nasflow.config import check_plain_data

        if not isinstance(data, Mapping):
            raise GenotypeError(f"genotype must be a mapping, got {type(data).__name__}")
        check_plain_data(data, "genotype", GenotypeError)
        unknown = set(data) - {"schema", "space", "cells", "meta"}
        if unknown:
            raise GenotypeError(f"unknown genotype field(s): {', '.join(sorted(map(str, unknown)))}")
        schema = data.get("schema")
        if type(schema) is not int or schema != SCHEMA_VERSION:  # bool/float compare equal to 1
            raise GenotypeError(f"field 'schema': expected version {SCHEMA_VERSION}, got {_short(schema)}")
        space = data.get("space")
        if not isinstance(space, str) or not space:
            raise GenotypeError(f"field 'space': expected a non-empty string, got {_short(space)}")
        _refuse_import_path(space, "space", allowed_paths)
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
                raise GenotypeError(f"field 'cells': labels must be non-empty strings, got {_short(label)}")
            if not isinstance(edges, list):
                raise GenotypeError(f"field '{where}': expected a list of edges")
            parsed[label] = [_parse_edge(edge, f"{where}[{i}]", allowed_paths) for i, edge in enumerate(edges)]
        return cls.from_cells(space, parsed, meta)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, *, allowed_paths: Collection[str] = ()) -> "Genotype":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise GenotypeError("not valid JSON: nested too deeply; refused") from None
        except ValueError as exc:  # an integer of more than 4300 digits
            from nasflow.config import too_long_number

            raise GenotypeError(f"not valid JSON: {too_long_number(exc)}; refused") from None
        return cls.from_dict(data, allowed_paths=allowed_paths)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, *, allowed_paths: Collection[str] = ()) -> "Genotype":
        from nasflow.config import safe_load_yaml

        try:
            data = safe_load_yaml(text, "genotype", GenotypeError)
        except GenotypeError as exc:
            message = str(exc).replace("genotype: YAML syntax error", "not valid YAML", 1)
            raise GenotypeError(message.removeprefix("genotype: ")) from None
        return cls.from_dict(data, allowed_paths=allowed_paths)

    def save(self, path: str | Path) -> Path:
        """Write JSON (or YAML for .yaml/.yml) under a temporary name, then rename it over ``path``."""
        path = Path(path)
        text = self.to_yaml() if path.suffix in {".yaml", ".yml"} else self.to_json()
        write_text_atomic(path, text if text.endswith("\n") else text + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, *, allowed_paths: Collection[str] = ()) -> "Genotype":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GenotypeError(f"genotype file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GenotypeError(f"cannot read genotype file {path}: {exc}") from None
        try:
            if path.suffix in {".yaml", ".yml"}:
                return cls.from_yaml(text, allowed_paths=allowed_paths)
            return cls.from_json(text, allowed_paths=allowed_paths)
        except GenotypeError as exc:
            raise GenotypeError(f"{path}: {exc}") from None


def _short(value: Any) -> str:
    from nasflow.config import short_repr

    return short_repr(value)


def _refuse_import_path(name: str, where: str, allowed_paths: Collection[str]) -> None:
    from nasflow.config import import_paths_in

    if name not in allowed_paths and import_paths_in(name):
        raise GenotypeError(f"field '{where}': {_short(name)} is an import path; a genotype may only name "
                            "registered ops and spaces (plugins are named in configs, never in genotype files)")


def _parse_edge(edge: Any, where: str, allowed_paths: Collection[str] = ()) -> GenoEdge:
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
            raise GenotypeError(f"field '{where}.{key}': expected a non-empty string, got {_short(edge[key])}")
    _refuse_import_path(edge["op"], f"{where}.op", allowed_paths)
    return GenoEdge(edge["op"], edge["src"], edge["dst"])
