"""nasflow.core.compile: genotype -> plain network equal to the supernet at one-hot alphas."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasflow.core.cell import ArchAlphas, Cell, SuperCell
from nasflow.core.compile import compile_cell, compile_model
from nasflow.errors import GenotypeError
from nasflow.core.genotype import GenoEdge, Genotype
from nasflow.core.mixed import HardArgmax, MixedOp
from nasflow.spaces.distill_cell import RUAS_OPS
from nasflow.core.supernet import find_arch

FAST = settings(max_examples=25, deadline=None, database=None)
pytestmark = pytest.mark.usefixtures("single_thread")
ATOL = 1e-6


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def set_onehot(model, space, genotype: Genotype, options: dict[str, dict] | None = None) -> None:
    """Point each label's alpha at the genotype and evaluate the supernet as that architecture."""
    options = options or {}
    with torch.no_grad():
        for label in genotype.labels:
            model.arch[label].copy_(space.onehot_alpha(genotype.edges(label), **options.get(label, {})))
    model.set_relaxation(HardArgmax())
    model.eval()


def assert_plain(compiled: nn.Module) -> None:
    assert not any(isinstance(m, (MixedOp, SuperCell)) for m in compiled.modules())
    assert len(find_arch(compiled).alphas) == 0
    assert list(find_arch(compiled).parameters()) == []


def _x(channels: int, seed: int, hw: int = 8) -> torch.Tensor:
    return torch.randn(2, channels, hw, hw, generator=torch.Generator().manual_seed(seed), dtype=torch.double)


# -- fixtures (built once per module; hypothesis varies alphas and inputs only) -----------------------
@pytest.fixture(scope="module")
def iem_net(distill_net_cls, distill_space):
    torch.manual_seed(0)
    return distill_net_cls(distill_space, [("iem", 3, 3)]).double()


@pytest.fixture(scope="module")
def two_label_net(distill_net_cls, distill_space):
    torch.manual_seed(1)
    return distill_net_cls(distill_space, [("iem", 3, 2), ("nrm", 6, 2)], out_channels=3).double()


@pytest.fixture(scope="module")
def darts_net(darts_net_cls, darts_space, randomize_bn):
    torch.manual_seed(2)
    net = darts_net_cls(darts_space, 4, ["normal", "reduce", "normal"]).double()
    randomize_bn(net, seed=3)
    return net


ruas_ops = st.lists(st.sampled_from(RUAS_OPS), min_size=7, max_size=7)


def distill_genotype(space, **ops_per_label: list[str]) -> Genotype:
    graph = space.graph()
    cells = {label: [GenoEdge(op, e.src, e.dst) for op, e in zip(ops, graph.edges)] for label, ops in ops_per_label.items()}
    return Genotype.from_cells(space.name, cells)


# -- distill space -----------------------------------------------------------------------------------
@given(ruas_ops, st.integers(0, 1000))
@FAST
def test_distill_three_stages_sharing_a_label_compile_to_the_hard_supernet(iem_net, distill_space, ops, seed) -> None:
    genotype = distill_genotype(distill_space, iem=ops)
    set_onehot(iem_net, distill_space, genotype)
    compiled = compile_model(iem_net, genotype)
    assert_plain(compiled)
    x = _x(3, seed)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), iem_net(x), rtol=0, atol=ATOL)


@given(ruas_ops, ruas_ops, st.integers(0, 1000))
@FAST
def test_distill_two_labels_compile_to_the_hard_supernet(two_label_net, distill_space, iem, nrm, seed) -> None:
    genotype = distill_genotype(distill_space, iem=iem, nrm=nrm)
    set_onehot(two_label_net, distill_space, genotype)
    compiled = compile_model(two_label_net, genotype)
    assert_plain(compiled)
    x = _x(3, seed)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), two_label_net(x), rtol=0, atol=ATOL)
    # Parameters: the convs around the cells plus one fresh plain cell per stage (2 per label).
    cells = {label: compile_cell(distill_space, genotype, label, c) for label, c in (("iem", 3), ("nrm", 6))}
    convs = (3 * 6 * 9 + 6) + (6 * 3 * 9 + 3)  # 168 + 165
    assert _n_params(compiled) == convs + 2 * _n_params(cells["iem"]) + 2 * _n_params(cells["nrm"])


def test_ruas_genotype_on_three_iem_stages_has_the_published_parameter_count(iem_net, distill_space) -> None:
    iem = ["skip_connect", "resconv_1x1", "resdilconv_3x3", "conv_3x3", "conv_3x3", "skip_connect", "conv_3x3"]
    genotype = distill_genotype(distill_space, iem=iem)
    set_onehot(iem_net, distill_space, genotype)
    compiled = compile_model(iem_net, genotype)
    # Per cell: resconv_1x1 (9 + 3) + 4 convs 3x3 (81 + 3 each) + fusion 12 -> 3 (36 + 3) = 387.
    assert _n_params(compiled) == 3 * 387 == 1161


# -- darts space -------------------------------------------------------------------------------------
DARTS_OPTIONS = {"normal": {"reduction": False}, "reduce": {"reduction": True}}


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None, database=None)
def test_darts_normal_and_reduction_cells_compile_to_the_hard_supernet(darts_net, darts_space, seed) -> None:
    rng = random.Random(seed)
    genotype = Genotype.from_cells(
        "darts",
        {label: darts_space.random_edges(rng, **opts) for label, opts in DARTS_OPTIONS.items()},
    )
    set_onehot(darts_net, darts_space, genotype, DARTS_OPTIONS)
    compiled = compile_model(darts_net, genotype)
    assert_plain(compiled)
    x = _x(3, seed % 1000)
    with torch.no_grad():
        out = compiled(x)
        torch.testing.assert_close(out, darts_net(x), rtol=0, atol=ATOL)
    assert out.shape == (2, 4 * 8, 4, 4)  # last cell: 4 nodes of 8 channels after one reduction
    cells = [m for m in compiled.modules() if isinstance(m, Cell)]
    assert len(cells) == 3
    for cell, label in zip(cells, ["normal", "reduce", "normal"]):
        edges = genotype.edges(label)
        assert len(cell.edges) == len(edges) == 8  # only the chosen edges exist
        kept = {cell.graph.edges[cell.graph.edge_index(e.src, e.dst)].name for e in edges}
        assert set(cell.edges.keys()) == kept
    # A DARTS cell with 8 kept edges has far fewer parameters than the supercell.
    assert _n_params(compiled) < _n_params(darts_net)


def test_darts_compiled_model_matches_in_float32_too(darts_net_cls, darts_space, randomize_bn) -> None:
    torch.manual_seed(5)
    net = darts_net_cls(darts_space, 4, ["reduce"])
    randomize_bn(net, seed=5)
    genotype = Genotype.from_cells("darts", {"reduce": darts_space.random_edges(random.Random(5), reduction=True)})
    set_onehot(net, darts_space, genotype, {"reduce": {"reduction": True}})
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(compile_model(net, genotype)(x), net(x), rtol=1e-5, atol=1e-5)


# -- the compiled model is independent and plain -------------------------------------------------------
def test_compiled_model_is_a_copy_with_the_supernet_weights(iem_net, distill_space) -> None:
    genotype = distill_genotype(distill_space, iem=["conv_3x3"] * 7)
    compiled = compile_model(iem_net, genotype)
    compiled_cell = compiled.body[0]
    super_cell = iem_net.body[0]
    assert type(compiled_cell) is Cell
    mixed = super_cell.edges["c1_d"]
    chosen = mixed.ops[mixed.op_names.index("conv_3x3")]
    assert torch.equal(compiled_cell.edges["c1_d"].op.weight, chosen.op.weight)
    assert compiled_cell.edges["c1_d"].op.weight is not chosen.op.weight
    with torch.no_grad():
        compiled_cell.edges["c1_d"].op.weight.add_(1.0)
    assert not torch.equal(compiled_cell.edges["c1_d"].op.weight, chosen.op.weight)  # supernet untouched
    assert len(iem_net.arch.alphas) == 1  # the supernet keeps its alphas


def test_supernet_compile_method_equals_compile_model(iem_net, distill_space) -> None:
    genotype = distill_genotype(distill_space, iem=["resconv_3x3"] * 7)
    set_onehot(iem_net, distill_space, genotype)
    x = _x(3, 0)
    with torch.no_grad():
        torch.testing.assert_close(iem_net.compile_genotype(genotype)(x), compile_model(iem_net, genotype)(x), rtol=0, atol=0)
    with pytest.raises(TypeError, match="compile_genotype"):  # .compile keeps nn.Module's meaning
        iem_net.compile(genotype)


# -- errors --------------------------------------------------------------------------------------------
def test_compile_rejects_an_unknown_op_naming_the_field(iem_net, distill_space) -> None:
    ops = ["conv_3x3"] * 7
    ops[4] = "conv_5x5"
    with pytest.raises(GenotypeError) as info:
        compile_model(iem_net, distill_genotype(distill_space, iem=ops))
    assert "cells.iem[4].op: unknown op 'conv_5x5'" in str(info.value)


def test_compile_rejects_genotypes_of_another_space_or_labels(iem_net, distill_space, darts_space) -> None:
    good = distill_genotype(distill_space, iem=["conv_3x3"] * 7)
    with pytest.raises(GenotypeError, match="space 'darts'"):
        compile_model(iem_net, Genotype("darts", good.cells))
    with pytest.raises(GenotypeError, match="do not match"):
        compile_model(iem_net, distill_genotype(distill_space, nrm=["conv_3x3"] * 7))
    with pytest.raises(GenotypeError, match="do not match"):
        compile_model(iem_net, distill_genotype(distill_space, iem=["conv_3x3"] * 7, nrm=["conv_3x3"] * 7))
    with pytest.raises(GenotypeError, match="missing"):
        compile_model(iem_net, Genotype("distill", (("iem", good.edges("iem")[:-1]),)))
    with pytest.raises(GenotypeError, match="not 'darts'"):
        compile_cell(darts_space, good, "iem", 3)


def test_compile_needs_exactly_one_arch_container() -> None:
    from nasflow.errors import SpaceError

    with pytest.raises(SpaceError, match="exactly one ArchAlphas"):
        compile_model(nn.Conv2d(1, 1, 1), Genotype.from_cells("distill", {"iem": []}))
    two = nn.ModuleList([ArchAlphas(), ArchAlphas()])
    with pytest.raises(SpaceError, match="found 2"):
        compile_model(two, Genotype.from_cells("distill", {"iem": []}))
