"""nasflow.core.genotype: versioned plain-data genotypes, JSON/YAML round trips, strict parsing."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nasflow.errors import GenotypeError
from nasflow.core.genotype import SCHEMA_VERSION, GenoEdge, Genotype
from nasflow.spaces.darts_cell import DartsCellSpace
from nasflow.spaces.distill_cell import DistillCellSpace

FAST = settings(max_examples=40, deadline=None, database=None)

# -- strategies ------------------------------------------------------------------------------------
names = st.text(min_size=1, max_size=12)
edges = st.builds(GenoEdge, op=names, src=names, dst=names)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**62), max_value=2**62)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
metas = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
genotypes = st.builds(
    Genotype.from_cells,
    space=names,
    cells=st.dictionaries(names, st.lists(edges, max_size=5), min_size=1, max_size=3),
    meta=metas,
)

RUAS_IEM = ["skip_connect", "resconv_1x1", "resdilconv_3x3", "conv_3x3", "conv_3x3", "skip_connect", "conv_3x3"]


def ruas_edges(ops: list[str]) -> tuple[GenoEdge, ...]:
    graph = DistillCellSpace().graph()
    return tuple(GenoEdge(op, e.src, e.dst) for op, e in zip(ops, graph.edges))


def valid_dict() -> dict:
    return Genotype.from_cells("distill", {"iem": ruas_edges(RUAS_IEM)}, {"rule": "argmax_per_edge"}).to_dict()


def assert_same(a: Genotype, b: Genotype) -> None:
    assert a == b
    assert a.labels == b.labels  # order kept
    assert dict(a.meta) == dict(b.meta)  # meta is not part of ==
    assert a.to_dict() == b.to_dict()


# -- round trips -----------------------------------------------------------------------------------
@given(genotypes)
@FAST
def test_json_round_trip(g: Genotype) -> None:
    assert_same(Genotype.from_json(g.to_json()), g)
    assert_same(Genotype.from_json(g.to_json(indent=None)), g)


@given(genotypes)
@FAST
def test_yaml_round_trip(g: Genotype) -> None:
    assert_same(Genotype.from_yaml(g.to_yaml()), g)


@given(genotypes)
@settings(max_examples=15, deadline=None, database=None)
def test_save_load_round_trip_by_suffix(g: Genotype) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".json", ".yaml", ".yml"):
            path = g.save(Path(tmp) / f"geno{suffix}")
            text = path.read_text(encoding="utf-8")
            if suffix == ".json":
                assert json.loads(text) == g.to_dict()
            else:
                assert yaml.safe_load(text) == g.to_dict()
            assert_same(Genotype.load(path), g)
            assert_same(Genotype.load(str(path)), g)


def test_on_disk_format_is_the_documented_one() -> None:
    g = Genotype.from_cells("distill", {"iem": ruas_edges(RUAS_IEM)}, {"rule": "argmax_per_edge"})
    data = json.loads(g.to_json())
    assert data["schema"] == SCHEMA_VERSION == 1
    assert data["space"] == "distill"
    assert data["cells"]["iem"][0] == {"op": "skip_connect", "src": "x", "dst": "d1"}
    assert data["meta"] == {"rule": "argmax_per_edge"}
    assert g.ops("iem") == RUAS_IEM
    assert g.edges("iem")[1] == GenoEdge("resconv_1x1", "x", "r1")


def test_genotype_is_frozen_and_hashable_with_meta_ignored() -> None:
    a = Genotype.from_cells("distill", {"iem": ruas_edges(RUAS_IEM)}, {"x": 1})
    b = Genotype.from_cells("distill", {"iem": ruas_edges(RUAS_IEM)}, {"x": 2})
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.space = "darts"  # type: ignore[misc]


def test_unknown_label_names_the_known_labels() -> None:
    g = Genotype.from_cells("distill", {"iem": ruas_edges(RUAS_IEM), "nrm": ruas_edges(RUAS_IEM)})
    with pytest.raises(GenotypeError, match="no cell labelled 'xyz' \\(labels: iem, nrm\\)"):
        g.edges("xyz")


# -- malformed input -------------------------------------------------------------------------------
def _with(path: str, value, *, delete: bool = False) -> dict:
    """valid_dict() with one field replaced (or deleted); path like 'cells.iem.0.op'."""
    data = valid_dict()
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    key = int(last) if isinstance(node, list) else last
    if delete:
        del node[key]
    else:
        node[key] = value
    return data


MALFORMED = [
    (_with("schema", 2), "'schema'"),
    (_with("schema", "1"), "'schema'"),
    (_with("schema", True), "'schema'"),
    (_with("schema", 1.0), "'schema'"),
    (_with("schema", None, delete=True), "'schema'"),
    (_with("space", None, delete=True), "'space'"),
    (_with("space", ""), "'space'"),
    (_with("space", 7), "'space'"),
    (_with("cells", None, delete=True), "'cells'"),
    (_with("cells", {}), "'cells'"),
    (_with("cells", [1, 2]), "'cells'"),
    (_with("cells.iem", "skip_connect"), "'cells.iem'"),
    (_with("cells.iem", {"op": "skip_connect"}), "'cells.iem'"),
    (_with("cells.iem.2", "conv_3x3"), "'cells.iem[2]'"),
    (_with("cells.iem.2.op", None, delete=True), "'cells.iem[2]': missing op"),
    (_with("cells.iem.0.dst", None, delete=True), "'cells.iem[0]': missing dst"),
    (_with("cells.iem.3.src", 5), "'cells.iem[3].src'"),
    (_with("cells.iem.3.op", ""), "'cells.iem[3].op'"),
    (_with("cells.iem.3.op", ["conv_3x3"]), "'cells.iem[3].op'"),
    (_with("cells.iem.1.inputs", [0]), "'cells.iem[1]': unknown key(s) inputs"),
    (_with("meta", [1]), "'meta'"),
    (_with("meta", None), "'meta'"),
    (_with("extra", 1), "unknown genotype field(s): extra"),
    ([valid_dict()], "must be a mapping"),
    (None, "must be a mapping"),
]


@pytest.mark.parametrize("data, fragment", MALFORMED)
def test_malformed_dicts_raise_genotype_error_naming_the_field(data, fragment: str) -> None:
    with pytest.raises(GenotypeError) as info:
        Genotype.from_dict(data)
    assert fragment in str(info.value)


@pytest.mark.parametrize("data, fragment", MALFORMED)
def test_malformed_files_raise_genotype_error_in_both_formats(data, fragment: str) -> None:
    for parse, text in [(Genotype.from_json, json.dumps(data)), (Genotype.from_yaml, yaml.safe_dump(data))]:
        with pytest.raises(GenotypeError) as info:
            parse(text)
        assert fragment in str(info.value)


def test_non_string_labels_in_yaml_are_rejected() -> None:
    text = "schema: 1\nspace: distill\ncells:\n  3: []\n"
    with pytest.raises(GenotypeError, match="labels must be non-empty strings"):
        Genotype.from_yaml(text)


@pytest.mark.parametrize("text", ["{", '{"schema": 1,}', "", "nan", '{"schema": 1} trailing'])
def test_malformed_json_is_a_genotype_error(text: str) -> None:
    with pytest.raises(GenotypeError):
        Genotype.from_json(text)


@pytest.mark.parametrize("text", ["cells: [", "a: b: c", "key: 'unterminated", "{x: 1", "- a\nb: c"])
def test_yaml_syntax_errors_are_genotype_errors(text: str) -> None:
    with pytest.raises(GenotypeError, match="not valid YAML"):
        Genotype.from_yaml(text)


def test_yaml_never_builds_python_objects() -> None:
    text = "!!python/object/apply:os.system ['echo pwned']"
    with pytest.raises(GenotypeError):
        Genotype.from_yaml(text)


@given(json_values)
@FAST
def test_arbitrary_json_data_parses_or_raises_genotype_error(data) -> None:
    for candidate in (data, {**valid_dict(), "cells": data}, {**valid_dict(), "cells": {"iem": data}}):
        try:
            Genotype.from_dict(candidate)
        except GenotypeError:
            pass
        try:
            Genotype.from_json(json.dumps(candidate))
        except GenotypeError:
            pass


@given(st.text(max_size=60))
@FAST
def test_arbitrary_text_parses_or_raises_genotype_error(text: str) -> None:
    for parse in (Genotype.from_json, Genotype.from_yaml):
        try:
            parse(text)
        except GenotypeError:
            pass


# -- files -----------------------------------------------------------------------------------------
def test_load_missing_file_is_a_genotype_error(tmp_path: Path) -> None:
    with pytest.raises(GenotypeError, match="not found"):
        Genotype.load(tmp_path / "nope.json")
    with pytest.raises(GenotypeError, match="cannot read"):
        Genotype.load(tmp_path)  # a directory
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GenotypeError):
        Genotype.load(bad)


def test_load_picks_the_parser_from_the_suffix(tmp_path: Path) -> None:
    g = Genotype.from_cells("distill", {"iem": ruas_edges(RUAS_IEM)})
    yml = tmp_path / "g.yml"
    yml.write_text(g.to_yaml())
    assert Genotype.load(yml) == g
    as_json = tmp_path / "g.json"
    as_json.write_text(g.to_yaml())  # YAML text in a .json file: parsed as JSON, which fails
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.load(as_json)


# -- validation against a space --------------------------------------------------------------------
def test_unknown_op_is_rejected_by_the_space_naming_the_field() -> None:
    ops = list(RUAS_IEM)
    ops[3] = "conv_7x7"
    g = Genotype.from_json(Genotype.from_cells("distill", {"iem": ruas_edges(ops)}).to_json())  # parses fine
    with pytest.raises(GenotypeError) as info:
        DistillCellSpace().cell(g.edges("iem"), 3)
    assert "[3].op: unknown op 'conv_7x7'" in str(info.value)
    assert "space 'distill'" in str(info.value)


def test_darts_op_in_a_distill_genotype_is_rejected() -> None:
    ops = list(RUAS_IEM)
    ops[0] = "sep_conv_3x3"  # a real op, but not a distill candidate
    with pytest.raises(GenotypeError, match="unknown op 'sep_conv_3x3'"):
        DistillCellSpace().cell(ruas_edges(ops), 3)


def test_wrong_edges_and_missing_edges_are_rejected_by_the_space() -> None:
    space = DistillCellSpace()
    edges = list(ruas_edges(RUAS_IEM))
    with pytest.raises(GenotypeError, match="missing r3->r4"):
        space.cell(edges[:-1], 3)
    edges[2] = GenoEdge("conv_3x3", "x", "d3")
    with pytest.raises(GenotypeError, match=r"\[2\]: no edge x->d3"):
        space.cell(edges, 3)
    darts = DartsCellSpace()
    with pytest.raises(GenotypeError, match="node n1 has no incoming edge"):
        darts.cell([GenoEdge("skip_connect", "s0", "n0"), GenoEdge("skip_connect", "s1", "n2")], 4)
