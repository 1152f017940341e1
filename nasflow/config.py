"""Typed, validated configuration from YAML.

Config classes are plain dataclasses; :func:`from_dict` checks every key and value against
the type hints (and ``field(metadata={"min": .., "max": .., "choices": ..})``) and names the
key path in every error, with the closest valid key for typos. YAML is read with
``yaml.safe_load`` only. A file may start from another with ``base: other.yaml``.

What a config may hold is plain data: mappings, lists, strings, numbers (integers within 64
bits, finite floats), booleans and null, nested at most :data:`MAX_DEPTH` levels and at most
:data:`MAX_VALUES` values after YAML aliases are expanded. Anything else (``!!python/object``
and other object tags, ``!!set``, ``!!timestamp``, ``!!binary``, self-referencing aliases,
alias "bombs", absurd nesting) is refused with a :class:`~nasflow.errors.ConfigError`.

**A config can name code to import.** Wherever a config expects the name of a plugin (the
``task``, ``search.strategy``, ``search.hypergradient``, ``search.derive_rule``, and task
options such as a space, candidate ops or losses), a ``package.module:attr`` string is imported
and used (see :mod:`nasflow.registries`). Run only configs you trust, as you would run only
scripts you trust. Nothing else we read can do this: genotype files, checkpoints, model files
and images are data, and an import path inside them is refused (:func:`import_paths_in`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar, Union

import yaml

from nasflow.errors import ConfigError, yaml_problem

T = TypeVar("T")

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a config (or genotype) may have."""

MAX_VALUES = 200_000
"""Most values a config (or genotype) may hold, counting each use of a YAML alias anew."""

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""Integer config values must fit in 64 bits (seeds, counts, sizes)."""

_PLAIN_SCALARS = (str, int, float, bool, type(None))
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` for messages: bounded in length, and safe for ints too long to print."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # ints beyond the str-conversion limit, very deep data
        text = f"<a {type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_key(key: Any) -> str:
    """A key as it should appear in a message: as written when it is short and printable."""
    return key if isinstance(key, str) and len(key) <= 60 and key.isprintable() and key.strip() else short_repr(key, 60)


def check_plain_data(data: Any, where: str = "config", error: type[Exception] = ConfigError,
                     max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> None:
    """Raise ``error`` unless ``data`` is plain, bounded, acyclic data (see the module docstring).

    Runs before anything walks the data recursively, so that nothing later meets a cycle, a
    RecursionError or an exponential alias expansion.
    """
    count = 0

    def walk(value: Any, path: str, depth: int, ancestors: set[int]) -> None:
        nonlocal count
        count += 1
        if count > max_values:
            raise error(f"{where}: more than {max_values:,} values (YAML aliases expanding?); refused")
        if isinstance(value, _PLAIN_SCALARS):
            return
        if not isinstance(value, (dict, list, tuple)):
            raise error(f"{path or where}: a value of type {type(value).__name__} is not allowed "
                        "(only mappings, lists, strings, numbers, true/false and null)")
        if depth >= max_depth:
            raise error(f"{where}: nested deeper than {max_depth} levels; refused")
        if id(value) in ancestors:
            raise error(f"{path or where}: refers to itself (a recursive YAML alias); refused")
        ancestors.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, _PLAIN_SCALARS):
                    raise error(f"{path or where}: a key of type {type(key).__name__} is not allowed")
                walk(item, _join(path, show_key(key)), depth + 1, ancestors)
        else:
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]", depth + 1, ancestors)
        ancestors.discard(id(value))

    walk(data, "", 0, set())


def import_paths_in(data: Any) -> list[str]:
    """Every string in plain ``data`` (keys and values) shaped like ``package.module:attr``.

    Files that are data, not configs (genotypes, checkpoints, model files), must not contain
    any: a registry would import such a name. Call :func:`check_plain_data` first.
    """
    found: list[str] = []
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if ":" in value and _IMPORT_PATH.match(value.strip()):
                found.append(value)
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return found


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check/convert ``value`` to type ``tp``; ``path`` names the key in errors."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {short_repr(value)} matches none of {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, path)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: {short_repr(value)} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {short_repr(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {short_repr(value)}")
        val_tp = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path}: keys must be strings, got {short_repr(k)}")
            out[k] = _convert(v, val_tp, f"{path}.{show_key(k)}")
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {short_repr(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {short_repr(value)}")
        if not INT_MIN <= value <= INT_MAX:
            raise ConfigError(f"{path}: {short_repr(value, 30)} is out of range (integers must fit in 64 bits)")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as text; YAML 1.2 and people mean a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {short_repr(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{path}: {short_repr(value, 30)} is too large for a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"{path}: expected a finite number, got {short_repr(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {short_repr(value)}")
        return value
    raise ConfigError(f"{path}: unsupported config type {_type_name(tp)}")  # a bug in a config class


def _check_range(value: Any, meta: Mapping[str, Any], path: str) -> None:
    if value is None:
        return
    try:
        if "min" in meta and value < meta["min"]:
            raise ConfigError(f"{path}: must be >= {meta['min']}, got {short_repr(value)}")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(f"{path}: must be <= {meta['max']}, got {short_repr(value)}")
    except TypeError:  # e.g. a list where the bound is a number (a field typed Any)
        raise ConfigError(f"{path}: {short_repr(value)} cannot be compared with its bounds") from None
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{path}: {short_repr(value)} is not one of {', '.join(map(str, meta['choices']))}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from plain data, validating keys, types and ranges.

    ``data`` must be plain data (:func:`check_plain_data`); anything else is a ConfigError.
    """
    check_plain_data(data, path or "config")
    return _from_dict(cls, data, path)


def _from_dict(cls: type[T], data: Any, path: str = "") -> T:
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {short_repr(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            name = show_key(key)
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{_join(path, name)}: unknown key{hint} (valid: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{_join(path, name)}: required key is missing")
            continue
        value = _convert(data[name], hints[name], _join(path, name))
        _check_range(value, f.metadata, _join(path, name))
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, OverflowError) as exc:  # __post_init__ checks across fields
        raise ConfigError(f"{where}: {exc}") from None


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def to_dict(obj: Any) -> Any:
    """Plain data (for saving the resolved config)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping; ``base: other.yaml`` (relative to this file) is merged beneath it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = safe_load_yaml(path.read_text(encoding="utf-8"), str(path), ConfigError)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    check_plain_data(data, str(path))
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen:
        raise ConfigError(f"{path}: base files include each other ({base_path})")
    return merge(read_yaml(base_path, _seen + (path.resolve(),)), data)


def safe_load_yaml(text: str, where: str, error: type[Exception] = ConfigError) -> Any:
    """``yaml.safe_load`` whose every failure is ``error`` in one line naming ``where``.

    Besides syntax errors: refused tags (``!!python/object``), nesting too deep for the parser
    (RecursionError) and integers too long to convert (ValueError).
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = yaml_problem(exc)
        if "would construct a Python object" in problem:  # e.g. !!python/object/apply:os.system
            raise error(f"{where}: YAML tag refused{problem}") from None
        raise error(f"{where}: YAML syntax error{problem}") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to parse; refused") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise error(f"{where}: a value cannot be read ({too_long_number(exc)}); refused") from None


def too_long_number(exc: BaseException) -> str:
    """What a ValueError from reading a number says, without Python's advice to change a limit."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Exceeds the limit" in text and "digits" in text:
        return "a number with more than 4300 digits"
    return text


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings; values are parsed as YAML (``3``, ``true``, ``[1, 2]``)."""
    out = merge({}, data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        except (RecursionError, ValueError, OverflowError):
            raise ConfigError(f"--set {key.strip()}: the value cannot be parsed (too deep or too large)") from None
        check_plain_data(value, f"--set {key.strip()}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out
