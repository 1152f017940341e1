"""nasflow.infer.fastpath: fused cells compute exactly what the compiled cells compute, faster.

Every check compares the fast path with the plain compiled module: in float64 to 1e-10 (the
re-parameterisations are exact algebra) and in float32 to 1e-5 (the acceptance bar), on random
genotypes, random weights and odd image sizes. Nothing here is timed (see benchmarks/speed.py).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasflow.infer.fastpath as fastpath
from nasflow.core.cell import Cell
from nasflow.core.compile import compile_model
from nasflow.infer.fastpath import FastConv, FastModule, FastOptions, FusedCell, fast_model, fold_chain, fuse_cell
from nasflow.core.genotype import GenoEdge, Genotype
from nasflow.core.graph import CellGraph, EdgeSpec, NodeSpec
from nasflow.core.ops import PlainConv, Residual, Zero
from nasflow.spaces.distill_cell import RUAS_OPS

FAST = settings(max_examples=20, deadline=None, database=None)
pytestmark = pytest.mark.usefixtures("single_thread")
OPTION_SETS = {
    "default": {},
    "merge_none": {"merge": "none"},
    "merge_all": {"merge": "all"},
    "merge_pad": {"merge": "pad"},
    "fusion_cat": {"fusion": "cat"},
    "nchw": {"channels_last": False},
    "no_fold_identity": {"fold_identity": False},
    "no_fold_chains": {"fold_chains": False},
}
ruas_ops = st.lists(st.sampled_from(RUAS_OPS), min_size=7, max_size=7)


# -- helpers -------------------------------------------------------------------------------------------
def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights of a sane scale (outputs stay O(1)) and non-zero biases."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * (1.0 / fan_in**0.5))
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.2)
    return model


def distill_genotype(space, **ops_per_label: list[str]) -> Genotype:
    graph = space.graph()
    cells = {label: [GenoEdge(op, e.src, e.dst) for op, e in zip(ops, graph.edges)]
             for label, ops in ops_per_label.items()}
    return Genotype.from_cells(space.name, cells)


def image(channels: int, seed: int, h: int = 37, w: int = 53, dtype=torch.float32, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(before: dict[str, torch.Tensor], model: nn.Module) -> None:
    after = model.state_dict()
    assert list(before) == list(after)
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


def compare(compiled: nn.Module, x: torch.Tensor, atol: float, **options) -> nn.Module:
    """fast == compiled to ``atol`` times the output scale (at least 1).

    Random genotypes of stacked cells without the clamps of a real network can amplify their
    input (all-skip distill cells: x8 per cell, outputs ~200); float32 rounding of the compiled
    module itself then exceeds 1e-5, so the bound scales with the largest output value.
    """
    before = state(compiled)
    fast = fast_model(compiled, **options)
    with torch.no_grad():
        expected = compiled(x)
    got = fast(x)
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(got, expected, rtol=0, atol=atol * scale)
    assert_same_state(before, compiled)
    return fast


@pytest.fixture(scope="module")
def two_label_net(distill_net_cls, distill_space):
    torch.manual_seed(1)
    return distill_net_cls(distill_space, [("iem", 3, 2), ("nrm", 6, 2)], out_channels=3)


# -- the distill space: random genotypes, every option set ----------------------------------------------
@given(ruas_ops, ruas_ops, st.integers(0, 10_000), st.sampled_from(sorted(OPTION_SETS)))
@FAST
def test_distill_cells_fast_equals_compiled_float32(two_label_net, distill_space, iem, nrm, seed, options) -> None:
    compiled = randomize(compile_model(two_label_net, distill_genotype(distill_space, iem=iem, nrm=nrm)), seed).eval()
    fast = compare(compiled, image(3, seed), 1e-5, **OPTION_SETS[options])
    cells = [m for m in fast.modules() if isinstance(m, (Cell, FusedCell))]
    assert len(cells) == 4 and all(isinstance(c, FusedCell) for c in cells)  # every distill cell is fused


@given(ruas_ops, ruas_ops, st.integers(0, 10_000), st.sampled_from(sorted(OPTION_SETS)))
@FAST
def test_distill_cells_fast_is_exact_algebra_in_float64(two_label_net, distill_space, iem, nrm, seed, options) -> None:
    compiled = compile_model(two_label_net, distill_genotype(distill_space, iem=iem, nrm=nrm))
    compiled = randomize(compiled.double(), seed).eval()
    compare(compiled, image(3, seed, dtype=torch.float64, batch=2), 1e-10, **OPTION_SETS[options])


def test_the_input_model_is_untouched(two_label_net, distill_space) -> None:
    ops = ["resconv_3x3", "resconv_1x1", "skip_connect", "conv_3x3", "dilconv_3x3", "resdilconv_3x3", "conv_1x1"]
    compiled = randomize(compile_model(two_label_net, distill_genotype(distill_space, iem=ops, nrm=ops)), 0)
    compiled.train()
    flags = [p.requires_grad for p in compiled.parameters()]
    before = state(compiled)
    fast = fast_model(compiled)
    fast(image(3, 0))
    assert_same_state(before, compiled)
    assert compiled.training and flags == [p.requires_grad for p in compiled.parameters()]
    assert all(type(m) is not FusedCell for m in compiled.modules())
    assert not any(p.requires_grad for p in fast.parameters())
    with pytest.raises(RuntimeError, match="inference only"):
        fast.train()


def test_fusion_folds_residuals_merges_kernels_and_chains(two_label_net, distill_space) -> None:
    """What the fused program looks like for a genotype where every trick applies."""
    ops = ["resconv_1x1", "resconv_1x1", "resconv_3x3", "conv_3x3", "conv_1x1", "skip_connect", "skip_connect"]
    compiled = randomize(compile_model(two_label_net, distill_genotype(distill_space, iem=ops, nrm=ops)), 3).eval()
    fast = compare(compiled, image(3, 3), 1e-5)
    body = list(fast.module.body)
    assert isinstance(body[2], FastConv) and body[2].weight.shape[0] == 12  # 3 -> 6 conv composed with 1x1 entry
    cell = body[3]
    kinds = [s[0] for s in cell.steps]
    assert kinds[:2] == ["in", "act_in"] and cell.folded_entry  # entry convs came from the stem
    assert "module" not in kinds and "cat" not in kinds and "sum" not in kinds
    # c2_d (resconv_3x3) and c2_r (conv_3x3 + node residual) read r1: one 3x3 conv, identities folded
    three = [s for s in cell.steps if s[0] == "conv" and getattr(cell, s[2]).shape[-1] == 3]
    assert len(three) == 1 and getattr(cell, three[0][2]).shape[:2] == (12, 6)
    assert tuple(body[2].weight.shape) == (12, 3, 3, 3)
    assert not body[0].folded_entry  # the first cell gets the network input as it is
    assert body[1].folded_entry and body[4].folded_entry  # cell -> cell: the output fusion absorbed the entry


@pytest.mark.parametrize("merge", ["same", "all", "pad", "none"])
def test_merge_policies_on_mixed_kernels(distill_net_cls, distill_space, merge) -> None:
    torch.manual_seed(4)
    net = distill_net_cls(distill_space, [("iem", 3, 1)])
    ops = ["conv_3x3", "dilconv_3x3", "conv_1x1", "skip_connect", "resdilconv_3x3", "resconv_3x3", "resconv_1x1"]
    compiled = randomize(compile_model(net, distill_genotype(distill_space, iem=ops)), 4).eval()
    fast = compare(compiled, image(3, 4), 1e-5, merge=merge)
    kernels = sorted(getattr(c, s[2]).shape[-1] for c in fast.modules() if isinstance(c, FusedCell)
                     for s in c.steps if s[0] == "conv")
    assert (5 in kernels) == (merge == "pad")  # only "pad" turns a 3x3 + dilated 3x3 pair into a 5x5


# -- the DARTS space: non-linear ops run as they are inside the fused cell ---------------------------------
@given(st.integers(0, 2**32 - 1))
@settings(max_examples=10, deadline=None, database=None)
def test_darts_cells_fast_equals_compiled(darts_net_cls, darts_space, randomize_bn, seed) -> None:
    torch.manual_seed(seed % 1000)
    net = darts_net_cls(darts_space, 4, ["normal", "reduce", "normal"])
    randomize_bn(net, seed=seed % 1000)
    rng = random.Random(seed)
    options = {"normal": {"reduction": False}, "reduce": {"reduction": True}}
    genotype = Genotype.from_cells("darts", {k: darts_space.random_edges(rng, **v) for k, v in options.items()})
    compiled = compile_model(net, genotype).eval()
    fast = compare(compiled, torch.randn(2, 3, 9, 11), 1e-5)
    fused = [m for m in fast.modules() if isinstance(m, FusedCell)]
    assert len(fused) == 3  # fused, with the non-linear edge ops kept as they are
    compare(compiled.double(), torch.randn(2, 3, 9, 11, dtype=torch.float64), 1e-10)


# -- hand-made graphs: several sources per node, opaque ops, fall-backs ---------------------------------------
def _cell(c: int, act: nn.Module | None, post: nn.Module | None, seed: int) -> Cell:
    graph = CellGraph(
        inputs=("a", "b"),
        nodes=(
            NodeSpec("n0", activate=True),
            NodeSpec("n1", residual="a", activate=False),
            NodeSpec("n2", residual="n0", activate=True),
            NodeSpec("n3", activate=True),
        ),
        edges=(
            EdgeSpec("a_n0", "a", "n0"),
            EdgeSpec("b_n0", "b", "n0"),
            EdgeSpec("b_n1", "b", "n1"),
            EdgeSpec("n0_n2", "n0", "n2"),
            EdgeSpec("n1_n2", "n1", "n2"),
            EdgeSpec("n0_n3", "n0", "n3"),
            EdgeSpec("a_n3", "a", "n3"),
        ),
        candidates=("x",),
        output=("n2", "n1", "n3", "n1"),
    )
    torch.manual_seed(seed)
    edges = {
        "a_n0": Residual(nn.Conv2d(c, c, 3, padding=1)),
        "b_n0": PlainConv(c, 3, 2),
        "b_n1": nn.Conv2d(c, c, 1, bias=False),
        "n0_n2": nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1)),  # not linear: runs as is
        "n1_n2": nn.Identity(),
        "n0_n3": Zero(1),
        "a_n3": PlainConv(c, 1, 1),
    }
    return randomize(Cell(graph, edges, {"b": nn.Conv2d(c, c, 1)}, post, act), seed)


class TwoInput(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell(x, torch.tanh(x))


@pytest.mark.parametrize("post", ["conv1x1", "identity", "conv3x3"])
@pytest.mark.parametrize("options", sorted(OPTION_SETS))
def test_general_graph_with_several_sources_and_opaque_ops(post, options) -> None:
    c = 4
    post_module = {"conv1x1": nn.Conv2d(4 * c, c, 1), "identity": nn.Identity(),
                   "conv3x3": nn.Conv2d(4 * c, c, 3, padding=1)}[post]
    model = TwoInput(_cell(c, nn.LeakyReLU(0.1), post_module, seed=7)).eval()
    fast = compare(model, image(c, 7), 1e-5, **OPTION_SETS[options])
    assert isinstance(fast.module.cell, FusedCell)
    assert set(fast.module.cell.opaque) == {"n0_n2", "n0_n3"}
    compare(model.double(), image(c, 8, dtype=torch.float64), 1e-10, **OPTION_SETS[options])


def test_cells_with_unknown_activations_fall_back_and_still_match() -> None:
    cell = _cell(4, nn.Softmax(dim=1), nn.Conv2d(16, 4, 1), seed=9)  # not elementwise: cannot act on blocks
    assert fuse_cell(cell) is cell
    model = TwoInput(cell).eval()
    fast = compare(model, image(4, 9), 1e-5)
    assert type(fast.module.cell) is Cell


def test_a_cell_with_a_relu_and_no_activation_at_all() -> None:
    for act in (nn.ReLU(), None, nn.Tanh()):
        model = TwoInput(_cell(4, act, nn.Conv2d(16, 4, 1), seed=10)).eval()
        fast = compare(model, image(4, 10), 1e-5)
        assert isinstance(fast.module.cell, FusedCell)


# -- chains, policy, options ---------------------------------------------------------------------------------
def test_fold_chain_equals_the_modules_applied_in_turn(distill_net_cls, distill_space) -> None:
    torch.manual_seed(11)
    net = distill_net_cls(distill_space, [("nrm", 6, 3)], in_channels=3, out_channels=3)
    ops = ["resconv_1x1", "resconv_1x1", "resdilconv_3x3", "skip_connect", "resconv_1x1", "resconv_1x1", "skip_connect"]
    compiled = randomize(compile_model(net, distill_genotype(distill_space, nrm=ops)), 11).eval()
    inner = fastpath.prepare(compiled, FastOptions(fold_chains=False))
    chain = fold_chain(list(inner.body))
    assert [type(m) for m in chain] == [FastConv, FusedCell, FusedCell, FusedCell, FastConv]
    assert all(m.folded_entry for m in chain[1:4])
    x = image(3, 11).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = x
        for m in chain:
            got = m(got)
    with torch.no_grad():
        expected = compiled(image(3, 11))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * max(1.0, expected.abs().max().item()))


def test_policy_threads_outputs_and_options() -> None:
    model = TwoInput(_cell(4, nn.LeakyReLU(0.05), nn.Conv2d(16, 4, 1), seed=12)).eval()
    before = torch.get_num_threads()
    fast = fast_model(model, threads=1)
    assert isinstance(fast, FastModule) and fast.options.threads == 1
    out = fast(image(4, 12))
    assert torch.get_num_threads() == before
    assert out.is_contiguous() and out.is_inference()
    raw = fast_model(model, contiguous_outputs=False)(image(4, 12))
    assert raw.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="merge"):
        FastOptions(merge="everything")
    with pytest.raises(ValueError, match="fusion"):
        FastOptions(fusion="concat")
    with pytest.raises(ValueError, match="threads"):
        FastOptions(threads=0)
    assert FastOptions().compile is False  # torch.compile is opt-in only


def test_the_engine_names_no_task() -> None:
    files = sorted(Path(fastpath.__file__).parent.glob("*.py"))
    assert len(files) > 1  # the package, not one module
    for path in files:
        assert not re.search("ruas|iem|nrm", path.read_text().lower()), path.name


def test_the_public_names_all_import() -> None:
    # in a fresh interpreter: the package imports without a cycle, and every name is there
    names = [*fastpath.__all__, "CL", "LANES", "Unsupported", "pack_choices", "to_channels_last", "to_contiguous"]
    code = (
        "import nasflow.infer.fastpath as f\n"
        "from nasflow.infer.fastpath import *\n"
        f"missing = [n for n in {names!r} if getattr(f, n, None) is None]\n"
        "assert not missing, missing\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- width packing, the cost model, plain convs --------------------------------------------------------------
@pytest.mark.parametrize("c_in,c_out,k,dil", [(3, 3, 3, 1), (3, 3, 3, 2), (6, 3, 3, 1), (3, 6, 3, 1), (2, 5, 5, 1)])
@pytest.mark.parametrize("pack", [2, 3, 4, 5])
def test_width_packed_conv_is_the_plain_conv(c_in, c_out, k, dil, pack) -> None:
    gen = torch.Generator().manual_seed(pack)
    x = torch.randn(2, c_in, 7, 4 * 3 * 5, generator=gen).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(c_out, c_in, k, k, generator=gen), torch.randn(c_out, generator=gen)
    pad = dil * (k - 1) // 2
    with torch.inference_mode():
        expected = torch.nn.functional.conv2d(x, w, b, padding=pad, dilation=dil)
        wp = fastpath.pack_weight(w, dil, pack).contiguous(memory_format=torch.channels_last)
        got = fastpath.conv2d_packed(x, wp, b.repeat(pack), pad, dil, pack)
        act = fastpath.conv2d_packed(x, wp, b.repeat(pack), pad, dil, pack, ("leaky", 0.1))
    assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(act, torch.nn.functional.leaky_relu(expected, 0.1), rtol=0, atol=1e-5)


def test_cost_model_prefers_packing_only_where_output_lanes_are_idle() -> None:
    lanes = fastpath.LANES
    assert fastpath.pack_choices(3, 3, 1, 1) == ()  # 1x1: nothing to gain
    assert fastpath.pack_choices(lanes, lanes, 3, 1) == ()  # a full register of outputs already
    best = fastpath.pack_choices(3, 3, 3, 1)
    # 3 outputs leave 13 of 16 lanes idle on AVX-512 (packing wins > 40 %), 5 of 8 on AVX2 (> 30 %)
    bound = 0.6 if lanes >= 16 else 0.7
    assert best and fastpath.conv_cost(3, 3, 3, 1, best[0]) < bound * fastpath.conv_cost(3, 3, 3, 1)
    assert all(fastpath.conv_cost(3, 3, 3, 1, p) < 0.9 * fastpath.conv_cost(3, 3, 3, 1) for p in best)


@pytest.mark.parametrize("width", [53, 60, 64, 1])
@pytest.mark.parametrize("spec", [(3, 3, 3, 1), (6, 3, 3, 1), (3, 3, 3, 2), (3, 6, 1, 1)])
def test_fast_conv_equals_conv2d_for_any_width(spec, width) -> None:
    c_in, c_out, k, dil = spec
    torch.manual_seed(width)
    conv = nn.Conv2d(c_in, c_out, k, padding=dil * (k - 1) // 2, dilation=dil)
    fast = FastConv.from_conv(conv, channels_last=True)
    assert list(dict(fast.named_parameters())) == ["weight", "bias"]  # same names as the conv
    x = torch.randn(1, c_in, 9, width).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), conv(x), rtol=0, atol=1e-5)
    assert FastConv.from_conv(nn.Conv2d(3, 3, 3, stride=2), True) is None  # not same-size: kept as is


def test_packed_and_unpacked_widths_match_the_compiled_cells(two_label_net, distill_space) -> None:
    ops = ["conv_3x3", "resconv_3x3", "dilconv_3x3", "conv_3x3", "resdilconv_3x3", "conv_1x1", "conv_3x3"]
    compiled = randomize(compile_model(two_label_net, distill_genotype(distill_space, iem=ops, nrm=ops)), 13).eval()
    for width in (60, 64, 56, 35, 53):  # divisible by 5, 4, 8/7, 7, nothing
        compare(compiled, image(3, width, h=23, w=width), 1e-5)


# -- receptive radius ---------------------------------------------------------------------------------------
@given(ruas_ops, st.integers(0, 1000))
@settings(max_examples=15, deadline=None, database=None)
def test_cell_radius_bounds_how_far_a_change_travels(distill_space, ops, seed) -> None:
    cell = randomize(distill_space.cell(distill_genotype(distill_space, x=ops).edges("x"), 3), seed).double().eval()
    radius = fastpath.cell_radius(cell)
    fused = fuse_cell(cell)
    assert fastpath.cell_radius(fused) == radius
    x = torch.randn(1, 3, 41, 41, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    bumped = x.clone()
    bumped[0, :, 20, 20] += 1.0
    with torch.no_grad():
        changed = (cell(bumped) - cell(x)).abs().amax(dim=(0, 1)) > 0
    rows, cols = torch.nonzero(changed, as_tuple=True)
    reach = max((rows - 20).abs().max().item(), (cols - 20).abs().max().item())
    assert reach <= radius  # the radius is an upper bound ...
    assert radius == sum(_reach(op) for op in _longest(ops))  # ... and the longest path's


def _reach(op: str) -> int:
    return 0 if op == "skip_connect" else 2 if "dil" in op else 1 if "3x3" in op else 0


def _longest(ops: list[str]) -> list[str]:
    """The ops on the longest-reaching path of the distill cell (c1_d | c1_r c2_d | ... | c1_r c2_r c3_r c4)."""
    c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4 = ops
    paths = [[c1_d], [c1_r, c2_d], [c1_r, c2_r, c3_d], [c1_r, c2_r, c3_r, c4]]
    return max(paths, key=lambda p: sum(_reach(o) for o in p))


def test_radius_of_other_ops_and_fast_modules_for_tiling(two_label_net, distill_space) -> None:
    from nasflow.infer.tiling import receptive_halo

    assert fastpath.op_radius(nn.MaxPool2d(3, 1, 1)) == 1
    assert fastpath.op_radius(nn.AdaptiveAvgPool2d(1)) is None  # sees the whole image
    assert fastpath.op_radius(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(),
                                            nn.Conv2d(2, 2, 5, padding=4, dilation=2))) == 5
    ops = ["resdilconv_3x3", "conv_3x3", "dilconv_3x3", "resconv_1x1", "skip_connect", "conv_3x3", "conv_1x1"]
    compiled = compile_model(two_label_net, distill_genotype(distill_space, iem=ops, nrm=ops)).eval()
    fast = fast_model(compiled)
    # the tiler reads the fused cells and plain convs through their halo() methods
    assert receptive_halo(fast.module) == receptive_halo(compiled) > 0
