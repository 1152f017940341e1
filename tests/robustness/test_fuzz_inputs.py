"""Issue #8, configs and genotypes: generated YAML and genotype JSON (random structures, wrong types,
huge numbers, deep nesting, unknown ops, object tags) end only in the documented errors
(ConfigError, GenotypeError) and, through the CLI, in one line and exit code 2."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nasflow.cli import main
from nasflow.core.compile import compile_model
from nasflow.config import read_yaml
from nasflow.errors import ConfigError, GenotypeError
from nasflow.core.genotype import Genotype
from nasflow.run.runner import check_config, load_run_config

CONFIG_KEYS = ["task", "seed", "deterministic", "device", "tensorboard", "checkpoint", "every_steps", "task_options",
               "search", "train", "strategy", "epochs", "hypergradient", "derive_rule", "weight_optimizer",
               "arch_optimizer", "lr", "momentum", "weight_decay", "lr_min", "betas", "grad_clip", "every", "warmup",
               "groups", "strategy_options", "space", "channels", "size", "train_samples", "val_samples",
               "batch_size", "noise_std", "teacher_seed", "teacher_scale", "candidates", "base"]
NAMES = ["planted", "ruas", "darts", "cooperative", "gdas", "random", "first_order", "finite_difference",
         "exact_hvp", "distill", "skip_connect", "conv_3x3", "none", "auto", "cpu", "cuda", "argmax_per_edge"]
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=":"), max_size=12)  # no import paths
NUMBERS = st.one_of(
    st.integers(-10, 10), st.integers(-(2**70), 2**70), st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 10**40]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 1e-320, 0.5]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, st.sampled_from(NAMES))
KEYS = st.one_of(st.sampled_from(CONFIG_KEYS), TEXT, st.integers(-3, 3), st.booleans())


def structures(keys: st.SearchStrategy = KEYS) -> st.SearchStrategy:
    return st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(keys, inner, max_size=5)),
                        max_leaves=25)


DEMO = yaml.safe_load(Path(__file__).resolve().parents[2].joinpath("tasks", "demo.yaml").read_text())


def _mutate(base: Any, path: list[Any], value: Any) -> Any:
    """``base`` with the value at ``path`` (followed as far as it goes) replaced by ``value``."""
    if not path or not isinstance(base, dict) or not base:
        return value
    key = list(base)[path[0] % len(base)]
    out = dict(base)
    out[key] = _mutate(base[key], path[1:], value)
    return out


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["random", "mutated", "mutated", "extra_key", "raw"]))
    event(f"config kind: {kind}")
    if kind == "random":
        data = draw(st.dictionaries(KEYS, structures(), max_size=6))
    elif kind == "mutated":  # the demo config with one value anywhere replaced by anything
        data = _mutate(DEMO, draw(st.lists(st.integers(0, 20), min_size=1, max_size=4)), draw(structures()))
    elif kind == "extra_key":
        data = dict(DEMO)
        section = draw(st.sampled_from(["search", "train", "task_options", "checkpoint"]))
        data[section] = {**(data.get(section) or {}), draw(TEXT): draw(SCALARS)}
    else:
        return draw(st.text(max_size=80))
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, ValueError, OverflowError):  # not every structure can be written as YAML
        return yaml.safe_dump({"task": "planted", "seed": "x"})


def _section(message: str) -> str:
    """The coarse place an error names, for hypothesis statistics."""
    head = message.split(":")[0].strip()
    for known in ("YAML", "not valid JSON", "field 'cells", "field 'space'", "field 'schema'", "field 'meta'",
                  "unknown genotype field", "genotype", "cells", "task_options", "search", "train", "checkpoint",
                  "seed", "task", "device", "deterministic", "tensorboard", "config"):
        if known in message.split(":")[0] or (known == "YAML" and "YAML" in message):
            return known.strip("'").replace("field '", "")
    return "another key" if head else "top level"


def _cli_exit(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def scratch() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="nasflow-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(text=config_texts(), cli_sample=st.integers(0, 9))
def test_generated_configs_raise_only_config_error(scratch: Path, text: str, cli_sample: int) -> None:
    path = scratch / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        check_config(load_run_config(path))
    except ConfigError as exc:
        event(f"config: ConfigError at {_section(str(exc))}")
        assert "\n" not in str(exc).strip() or "YAML" in str(exc)
        if cli_sample == 0:  # a sample of them through the command line: one line, exit code 2
            code, err = _cli_exit(["run", str(path), "--out", str(scratch / "never")])
            assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("nasflow: error: "), err
            assert not (scratch / "never").exists()
            event("config: CLI exit 2")
        return
    event("config: valid")


# -- hand-made hostile configs ------------------------------------------------------------------------------
_MARKER = "nasflow-pwned-marker"

HOSTILE_YAML = {
    "python object": "task: !!python/object/apply:os.system ['touch {marker}']\n",
    "python name": "task: planted\nsearch: {strategy: !!python/name:os.system }\n",
    "python module": "task: !!python/module:os\n",
    "set": "task: planted\ntask_options: {candidates: !!set {a, b}}\n",
    "timestamp": "task: planted\ntask_options: {when: 2024-01-01 10:00:00}\n",
    "binary": "task: planted\ntask_options: {blob: !!binary aGVsbG8=}\n",
    "recursive alias": "task: planted\ntask_options: &a {loop: *a}\n",
    "alias bomb": "task: planted\ntask_options:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                  + "".join(f"  {chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                            f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                            f"*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)),
    "deep lists": "task: planted\ntask_options: {x: " + "[" * 3000 + "]" * 3000 + "}\n",
    "deep mappings": "task: planted\ntask_options: " + "{a: " * 200 + "1" + "}" * 200 + "\n",
    "huge int": "task: planted\nseed: " + "9" * 5000 + "\n",
    "int over 64 bits": "task: planted\nseed: 18446744073709551616\n",
    "inf lr": "task: planted\ntrain: {lr: .inf}\n",
    "nan lr": "task: planted\ntrain: {lr: .nan}\n",
    "float overflow": "task: planted\ntrain: {lr: 1.0e+999}\n",
    "int key": "task: planted\nsearch: {groups: {1: {every: 2}}}\n",
    "not a mapping": "- task\n- planted\n",
    "unknown task": "task: plantd\n",
    "task is a function": "task: os:getcwd\n",
    "strategy is not a strategy": "task: planted\nsearch: {strategy: 'nasflow.registries:Registry'}\n",
    "unknown hypergradient": "task: planted\nsearch: {hypergradient: third_order}\n",
    "bad betas": "task: planted\nsearch: {arch_optimizer: {betas: [0.5]}}\n",
    "binary junk": "\x00\x01\x02 task: [",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_YAML))
def test_hostile_yaml_configs_are_config_errors(name: str, tmp_path: Path) -> None:
    marker = tmp_path / _MARKER
    path = tmp_path / "c.yaml"
    path.write_text(HOSTILE_YAML[name].replace("{marker}", str(marker)), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        check_config(load_run_config(path))
    assert len(str(info.value)) < 600
    code, err = _cli_exit(["run", str(path), "--out", str(tmp_path / "never")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("nasflow: error: "), err
    assert not marker.exists() and not (tmp_path / "never").exists()
    if name.startswith("python"):
        assert "YAML tag refused" in err and "would construct a Python object" in err


def test_hostile_override_values_are_config_errors() -> None:
    for value in ["[" * 3000, "9" * 5000, "!!python/object/apply:os.getcwd []", ".inf", "&a [*a]"]:
        with pytest.raises(ConfigError):
            check_config(load_run_config("demo", [f"train.lr={value}"]))


def test_base_include_loops_and_bad_bases(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntask: planted\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    (tmp_path / "c.yaml").write_text("base: [1, 2]\n")
    (tmp_path / "d.yaml").write_text("base: .\n")
    for name in "abcd":
        with pytest.raises(ConfigError):
            read_yaml(tmp_path / f"{name}.yaml")


# -- genotypes ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_supernet() -> torch.nn.Module:
    from nasflow.task import build_task

    cfg = load_run_config("demo", ["task_options.train_samples=2", "task_options.val_samples=2", "task_options.size=4"])
    return build_task(cfg, torch.device("cpu")).build_supernet()


VALID = {"schema": 1, "space": "distill", "cells": {"cell": [
    {"op": "conv_3x3", "src": "x", "dst": "d1"}]}, "meta": {}}
OPS = st.one_of(st.sampled_from(["skip_connect", "conv_3x3", "conv_1x1", "none", "sep_conv_3x3", "dil_conv_3x3",
                                 "os:system", "nasflow.core.ops:get_op", "posix:getpid", "x:y.z"]), TEXT)
NODES = st.one_of(st.sampled_from(["x", "d1", "d2", "d3", "d4", "out", "c_{k-1}"]), TEXT)
EDGE = st.fixed_dictionaries({"op": OPS, "src": NODES, "dst": NODES})
EDGE_ANY = st.one_of(EDGE, EDGE.map(lambda e: {**e, "extra": 1}), structures(st.sampled_from(["op", "src", "dst"])))
DEMO_EDGES = [{"op": op, "src": src, "dst": dst} for op, (src, dst) in zip(
    ["conv_3x3", "skip_connect", "conv_1x1", "conv_3x3", "skip_connect", "conv_3x3", "conv_1x1"],
    [("x", "d1"), ("x", "r1"), ("r1", "d2"), ("r1", "r2"), ("r2", "d3"), ("r2", "r3"), ("r3", "r4")])]
GENO_KEYS = st.one_of(st.sampled_from(["schema", "space", "cells", "meta"]), TEXT)


@st.composite
def genotype_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["random", "shaped", "shaped", "shaped", "raw"]))
    event(f"genotype kind: {kind}")
    if kind == "random":
        data: Any = draw(st.dictionaries(GENO_KEYS, structures(), max_size=5))
    elif kind == "shaped":
        def mostly(good: Any, bad: st.SearchStrategy) -> Any:  # the right value 4 times in 5
            return good if draw(st.integers(0, 4)) else draw(bad)

        n = draw(st.integers(0, 8))
        edges = [mostly(e, EDGE_ANY) for e in draw(st.permutations(DEMO_EDGES))[:n]]
        data = {
            "schema": mostly(1, SCALARS),
            "space": mostly("distill", st.one_of(st.sampled_from(["darts", "os:getcwd", "nasflow.x:Y"]), TEXT)),
            "cells": mostly({mostly("cell", TEXT): edges}, st.one_of(
                st.dictionaries(st.one_of(st.just("cell"), TEXT), st.lists(EDGE_ANY, max_size=8), max_size=2),
                structures())),
        }
        if draw(st.booleans()):
            data["meta"] = draw(structures())
    else:
        return draw(st.text(max_size=60))
    try:
        return json.dumps(data)
    except (TypeError, ValueError):
        return "{}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(text=genotype_texts(), cli_sample=st.integers(0, 9))
def test_generated_genotypes_raise_only_genotype_error(scratch: Path, demo_supernet: torch.nn.Module, text: str,
                                                       cli_sample: int) -> None:
    path = scratch / "g.json"
    try:
        genotype = Genotype.from_json(text)
    except GenotypeError as exc:
        event(f"genotype: GenotypeError when read, at {_section(str(exc))}")
        if cli_sample == 0:  # a sample through the command line: one line, exit code 2
            path.write_text(text, encoding="utf-8")
            code, err = _cli_exit(["viz", str(path), "-o", str(scratch / "pic"), "--format", "svg"])
            assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("nasflow: error: "), err
            event("genotype: CLI (viz) exit 2")
        return
    try:
        compile_model(demo_supernet, genotype)
    except GenotypeError as exc:
        event(f"genotype: GenotypeError when compiled, at {_section(str(exc))}")
        if cli_sample == 0:
            path.write_text(text, encoding="utf-8")
            code, err = _cli_exit(["train", "demo", "--genotype", str(path), "--out", str(scratch / "never"),
                                   "--quiet", "--set", "train.epochs=0", "--set", "tensorboard=false",
                                   "--set", "task_options.train_samples=2", "--set", "task_options.val_samples=2"])
            assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("nasflow: error: "), err
            assert not (scratch / "never").exists()
            event("genotype: CLI (train) exit 2")
        return
    event("genotype: valid and compiles")


HOSTILE_GENOTYPES = {
    "deep json": "[" * 100_000 + "]" * 100_000,
    "deep mapping": '{"a": ' * 5000 + "1" + "}" * 5000,
    "huge int": '{"schema": ' + "9" * 5000 + "}",
    "nan": '{"schema": NaN, "space": "distill", "cells": {}}',
    "op import path": json.dumps({**VALID, "cells": {"cell": [{"op": "os:system", "src": "x", "dst": "d1"}]}}),
    "space import path": json.dumps({**VALID, "space": "os:getcwd"}),
    "unknown op": json.dumps({**VALID, "cells": {"cell": [{"op": "conv_9x9", "src": "x", "dst": "d1"}]}}),
    "wrong edge": json.dumps({**VALID, "cells": {"cell": [{"op": "conv_3x3", "src": "d4", "dst": "x"}]}}),
    "other space": json.dumps({**VALID, "space": "darts"}),
    "edges not a list": json.dumps({**VALID, "cells": {"cell": {"op": "x"}}}),
    "schema 2": json.dumps({**VALID, "schema": 2}),
    "schema true": json.dumps({**VALID, "schema": True}),
    "not json": "{'schema': 1}",
    "python tag yaml": "!!python/object/apply:os.system ['true']",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_GENOTYPES))
def test_hostile_genotypes_are_genotype_errors(name: str, tmp_path: Path, demo_supernet: torch.nn.Module) -> None:
    text = HOSTILE_GENOTYPES[name]
    path = tmp_path / ("g.yaml" if "yaml" in name else "g.json")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GenotypeError) as info:
        compile_model(demo_supernet, Genotype.load(path))
    if "tag" in name:
        assert "YAML tag refused" in str(info.value)
    code, err = _cli_exit(["train", "demo", "--genotype", str(path), "--out", str(tmp_path / "never"), "--quiet",
                           "--set", "train.epochs=0", "--set", "tensorboard=false"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("nasflow: error: "), err
    assert not (tmp_path / "never").exists()
