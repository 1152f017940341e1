"""Config loading: types, ranges, unknown keys with suggestions, includes, overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nasflow.config import apply_overrides, from_dict, read_yaml, to_dict
from nasflow.errors import ConfigError
from nasflow.schema import RunConfig


@dataclass
class Inner:
    lr: float = field(default=0.1, metadata={"min": 0.0})
    betas: tuple[float, float] = (0.5, 0.999)


@dataclass
class Outer:
    name: str
    epochs: int = field(default=3, metadata={"min": 0})
    flag: bool = False
    device: str = field(default="cpu", metadata={"choices": ("cpu", "cuda")})
    inner: Inner = field(default_factory=Inner)
    rule: str | None = None


def test_valid_data_builds_nested_dataclasses() -> None:
    cfg = from_dict(Outer, {"name": "x", "epochs": 2, "inner": {"lr": 1, "betas": [0.1, 0.2]}})
    assert cfg.epochs == 2 and cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.betas == (0.1, 0.2)
    assert to_dict(cfg)["inner"] == {"lr": 1.0, "betas": [0.1, 0.2]}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "epoch": 2}, "epoch: unknown key; did you mean 'epochs'?"),
        ({"name": "x", "inner": {"lrr": 1}}, "inner.lrr: unknown key; did you mean 'lr'?"),
        ({"name": "x", "epochs": -1}, "epochs: must be >= 0"),
        ({"name": "x", "epochs": "three"}, "epochs: expected an integer"),
        ({"name": "x", "epochs": True}, "epochs: expected an integer"),
        ({"name": "x", "flag": "yes"}, "flag: expected true or false"),
        ({"name": "x", "device": "tpu"}, "device: 'tpu' is not one of cpu, cuda"),
        ({"name": "x", "inner": {"betas": [0.1]}}, "inner.betas: expected 2 values"),
        ({"epochs": 1}, "name: required key is missing"),
        ({"name": "x", "inner": 3}, "inner: expected a mapping"),
    ],
)
def test_bad_values_name_the_key_path(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, data)
    assert message in str(info.value)


def test_overrides_parse_yaml_values_and_create_paths() -> None:
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=[1, 2]", "d.e=true", "s=hello"])
    assert data == {"a": {"b": 2, "c": [1, 2]}, "d": {"e": True}, "s": "hello"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["novalue"])


def test_base_include_merges_beneath(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("task: planted\nsearch: {epochs: 5, strategy: darts}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nsearch: {epochs: 2}\n")
    data = read_yaml(tmp_path / "child.yaml")
    assert data == {"task": "planted", "search": {"epochs": 2, "strategy": "darts"}}
    cfg = from_dict(RunConfig, data)
    assert cfg.search.epochs == 2 and cfg.search.strategy == "darts"


def test_include_cycle_and_yaml_errors_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="include each other"):
        read_yaml(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_yaml(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")
