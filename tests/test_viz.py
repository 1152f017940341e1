"""Genotype pictures: what the .dot says, rendering with and without the Graphviz binary."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest

from nasflow.core import viz
from nasflow.cli import main
from nasflow.errors import NasflowError
from nasflow.core.genotype import GenoEdge, Genotype
from nasflow.core.space import build_space

HAS_DOT = shutil.which("dot") is not None


@pytest.fixture
def distill_genotype() -> Genotype:
    space = build_space("distill")
    cells = {"iem": space.random_edges(random.Random(0)), "nrm": space.random_edges(random.Random(1))}
    return Genotype.from_cells("distill", cells)


@pytest.fixture
def darts_genotype() -> Genotype:
    space = build_space("darts")
    cells = {
        "normal": space.random_edges(random.Random(0)),
        "reduce": space.random_edges(random.Random(1), reduction=True),
    }
    return Genotype.from_cells("darts", cells)


def _edges(source: str) -> list[tuple[str, str, str]]:
    """(tail, head, attributes) of every edge statement in dot text."""
    return re.findall(r'^\s*"([^"]+)" -> "([^"]+)"(?: \[(.*)\])?$', source, flags=re.M)


def _labels(source: str, prefix: str) -> set[str]:
    """Display labels of the nodes whose id starts with ``prefix``."""
    found = re.findall(r'^\s*"' + re.escape(prefix) + r'[^"]*" \[label=("[^"]*"|\S+)', source, flags=re.M)
    return {label.strip('"') for label in found}


def test_distill_picture_reads_as_the_distillation_chain(distill_genotype: Genotype) -> None:
    source = viz.genotype_digraph(distill_genotype).source
    assert "rankdir=LR" in source
    assert source.count("subgraph cluster_") == 2
    edges = _edges(source)
    for label, cell in distill_genotype.cells:
        assert _labels(source, f"{label}.") >= {"x", "r1", "r2", "r3", "r4", "d1", "d2", "d3", "out"}
        for e in cell:  # every chosen op, on its own edge, in its own cluster
            assert any(t == f"{label}.{e.src}" and h == f"{label}.{e.dst}" and f"label={e.op}" in a
                       for t, h, a in edges), e
        chain = [f"{label}.{n}" for n in ("x", "r1", "r2", "r3", "r4")]
        pairs = {(t, h) for t, h, _ in edges}
        assert all((a, b) in pairs for a, b in zip(chain, chain[1:]))
        residual = {(t, h) for t, h, a in edges if 'label="+"' in a and "dashed" in a and t.startswith(label)}
        assert residual == {(f"{label}.x", f"{label}.r1"), (f"{label}.r1", f"{label}.r2"),
                            (f"{label}.r2", f"{label}.r3")}
        fusion = f"{label}.__fusion__"
        assert {t for t, h, _ in edges if h == fusion} == {f"{label}.{n}" for n in ("d1", "d2", "d3", "r4")}
        assert (fusion, f"{label}.__output__") in pairs
    assert "concat + 1x1 fusion" in source


def test_darts_picture_uses_the_darts_convention(darts_genotype: Genotype) -> None:
    source = viz.genotype_digraph(darts_genotype).source
    edges = _edges(source)
    for label, cell in darts_genotype.cells:
        assert _labels(source, f"{label}.") == {"c_{k-2}", "c_{k-1}", "0", "1", "2", "3", "c_{k}"}
        op_edges = [(t, h, a) for t, h, a in edges if t.startswith(f"{label}.") and "label=" in a]
        assert sorted(a.split("label=")[1].split()[0] for _, _, a in op_edges) == sorted(e.op for e in cell)
        for node in ("n0", "n1", "n2", "n3"):  # top-2 per node
            assert sum(h == f"{label}.{node}" for _, h, _ in op_edges) == 2
            assert (f"{label}.{node}", f"{label}.__output__") in {(t, h) for t, h, _ in edges}
    assert "stride 2 on edges from c_{k-2}, c_{k-1}" in source  # only the reduction cell says so
    assert source.count("stride 2") == 1


def test_unknown_space_draws_the_edges_only() -> None:
    g = Genotype.from_cells("no_such_space", {"a": [GenoEdge("conv_3x3", "in", "h"), GenoEdge("my_op", "h", "o")]})
    source = viz.genotype_digraph(g).source
    assert {(t, h) for t, h, _ in _edges(source)} == {("a.in", "a.h"), ("a.h", "a.o")}
    assert "my_op" in source and "edges only" in source and "__output__" not in source


def test_node_ids_with_colons_stay_nodes_not_ports() -> None:
    g = Genotype.from_cells("none_here", {"x:y": [GenoEdge("op", "a:b", "c")]})
    source = viz.genotype_digraph(g).source
    assert '"x%3Ay.a%3Ab" -> "x%3Ay.c"' in source


def test_writes_dot_and_renders_svg(distill_genotype: Genotype, tmp_path: Path) -> None:
    result = viz.write_genotype_picture(distill_genotype, tmp_path / "pic.svg")
    assert result.dot_path == tmp_path / "pic.dot"
    dot_text = result.dot_path.read_text()
    assert all(f"label={op}" in dot_text for label in distill_genotype.labels for op in distill_genotype.ops(label))
    if not HAS_DOT:
        pytest.skip("Graphviz 'dot' is not installed")
    assert result.hint is None
    assert result.rendered == [tmp_path / "pic.svg", tmp_path / "pic.png"]
    svg = (tmp_path / "pic.svg").read_text()
    assert "<svg" in svg and ">r4<" in svg and "concat + 1x1 fusion" in svg
    assert (tmp_path / "pic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = viz.write_genotype_picture(distill_genotype, tmp_path / "pic", formats=["svg"])  # overwrite ours
    assert again.rendered == [tmp_path / "pic.svg"]


def test_without_dot_the_dot_file_is_written_with_a_hint(
    distill_genotype: Genotype, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(viz.shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = viz.write_genotype_picture(distill_genotype, tmp_path / "g")
    assert result.dot_path.read_text().startswith("digraph")
    assert result.rendered == [] and result.hint is not None and "install Graphviz" in result.hint
    assert not (tmp_path / "g.svg").exists()


def test_executable_not_found_becomes_the_hint(
    distill_genotype: Genotype, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(viz.shutil, "which", lambda name, *a, **k: "/pretend/dot")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # graphviz itself finds no dot
    result = viz.write_genotype_picture(distill_genotype, tmp_path / "g")
    assert result.dot_path.exists() and result.rendered == [] and result.hint == viz.INSTALL_HINT


def test_bad_format_is_a_user_error_and_writes_nothing(distill_genotype: Genotype, tmp_path: Path) -> None:
    with pytest.raises(NasflowError, match="unknown picture format 'bogus'"):
        viz.write_genotype_picture(distill_genotype, tmp_path / "g", formats=["bogus"])
    assert list(tmp_path.iterdir()) == []


def test_cli_viz_without_dot_exits_0_and_prints_the_hint(
    distill_genotype: Genotype, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = distill_genotype.save(tmp_path / "genotype.json")
    monkeypatch.setattr(viz.shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["viz", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(tmp_path / "genotype.dot")]
    assert "install Graphviz" in err and err.count("\n") == 1
    assert "r4" in (tmp_path / "genotype.dot").read_text()


def test_cli_viz_renders_into_a_folder(darts_genotype: Genotype, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = darts_genotype.save(tmp_path / "g.yaml")
    assert main(["viz", str(path), "-o", str(tmp_path / "pics") + "/", "--format", "svg"]) == 0
    out, _ = capsys.readouterr()
    written = [Path(p) for p in out.split()]
    assert written[0] == tmp_path / "pics" / "g.dot"
    assert written[0].read_text().count('[label="c_{k-2}"') == 2  # one input node per cell
    if HAS_DOT:
        assert written[1:] == [tmp_path / "pics" / "g.svg"]


def test_cli_viz_never_overwrites_the_genotype(distill_genotype: Genotype, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "g.dot"
    path.write_text(distill_genotype.to_json())  # a genotype that happens to be named .dot
    assert main(["viz", str(path)]) == 2
    assert Genotype.load(path) == distill_genotype
    assert capsys.readouterr().err.startswith("nasflow: error: refusing to overwrite")
