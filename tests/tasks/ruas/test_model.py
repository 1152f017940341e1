"""The RUAS network: max filter, IEM/NRM formulas, parameter counts, labels and alphas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasflow.core.compile import compile_model
from nasflow.spaces.distill_cell import EDGE_NAMES, DistillCellSpace
from nasflow.tasks.ruas.model import PAPER_GENOTYPE, RUASNet, RUASOutput, max_filter2x2, paper_genotype


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def compiled() -> nn.Module:
    torch.manual_seed(0)
    return compile_model(RUASNet(), PAPER_GENOTYPE)


# --- max filter --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 6, 8, 1), (3, 2, 4, 4), (3, 5, 4)])
def test_max_filter_equals_released_max_pool(shape) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))  # negatives: the zero pad shows
    ref = F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 2, stride=1)
    got = max_filter2x2(x)
    assert got.shape == x.shape
    assert torch.equal(got, ref)


def test_max_filter_by_hand() -> None:
    x = torch.tensor([[[[0.2, 0.6], [0.1, 0.4]]]])
    assert torch.equal(max_filter2x2(x), torch.tensor([[[[0.6, 0.6], [0.4, 0.4]]]]))
    neg = -torch.ones(1, 1, 2, 2)
    assert torch.equal(max_filter2x2(neg), torch.tensor([[[[-1.0, 0.0], [0.0, 0.0]]]]))


# --- genotype and parameter counts -------------------------------------------------------------------
def test_paper_genotype() -> None:
    graph = DistillCellSpace().graph()
    assert [e.name for e in graph.edges] == list(EDGE_NAMES)
    assert PAPER_GENOTYPE.space == "distill"
    assert PAPER_GENOTYPE.labels == ("iem", "nrm")
    assert PAPER_GENOTYPE.ops("iem") == [
        "skip_connect", "resconv_1x1", "resdilconv_3x3", "conv_3x3", "conv_3x3", "skip_connect", "conv_3x3"]
    assert PAPER_GENOTYPE.ops("nrm") == [
        "resconv_1x1", "resconv_1x1", "resdilconv_3x3", "skip_connect", "resconv_1x1", "resconv_1x1", "skip_connect"]
    for label in ("iem", "nrm"):
        assert [(e.src, e.dst) for e in PAPER_GENOTYPE.edges(label)] == [(e.src, e.dst) for e in graph.edges]
    assert paper_genotype(use_nrm=False).labels == ("iem",)
    assert paper_genotype(use_nrm=False).edges("iem") == PAPER_GENOTYPE.edges("iem")


def test_compiled_paper_parameter_counts(compiled: nn.Module) -> None:
    iem = numel(compiled.iem_cells)
    nrm = numel(compiled.nrm_stem) + numel(compiled.nrm_cells) + numel(compiled.nrm_out)
    assert (iem, nrm, numel(compiled)) == (1161, 2277, 3438)
    assert list(compiled.arch_parameters()) == []


def test_compiled_iem_only_parameter_count() -> None:
    net = compile_model(RUASNet(use_nrm=False), paper_genotype(use_nrm=False))
    assert numel(net) == 1161
    assert not hasattr(net, "nrm_stem")


def test_compiled_network_runs(compiled: nn.Module) -> None:
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        o = compiled(y)
    assert isinstance(o, RUASOutput)
    assert o.out.shape == y.shape and len(o.ts) == 3
    assert torch.equal(o.out, o.u - o.n)


# --- IEM formulas on a hand-computed input --------------------------------------------------------------
class FixedLogits(nn.Module):
    """Stands in for a compiled cell: records its input and returns known logits."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = torch.tensor([[logits]], dtype=torch.float64).expand(1, 3, 2, 2)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.logits


L3 = math.log(3.0)  # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25


@pytest.mark.parametrize("use_nrm", [False, True])
def test_iem_formulas_by_hand(use_nrm: bool) -> None:
    net = compile_model(RUASNet(use_nrm=use_nrm), paper_genotype(use_nrm)).double()
    logits = [[[0.0, -30.0], [L3, 30.0]], [[-L3, 0.0], [0.0, -30.0]], [[0.0, 0.0], [0.0, 0.0]]]
    for k, lg in enumerate(logits):
        net.iem_cells[k] = FixedLogits(lg)
    y = torch.tensor([[[[0.2, 0.6], [0.1, 0.4]]]], dtype=torch.float64).expand(1, 3, 2, 2)  # same on RGB
    with torch.no_grad():
        o = net(y)

    def T(rows):
        return torch.tensor([[rows]], dtype=torch.float64).expand(1, 3, 2, 2)

    # stage 0: x0 = maxfilter(y); sigmoid(-30) ~ 1e-13 clamps to 0.001 and 0.6 / 0.001 clamps to 1
    x = [T([[0.6, 0.6], [0.4, 0.4]])]
    t = [T([[0.5, 0.001], [0.75, 1.0]])]
    u = [T([[0.4, 1.0], [0.1 / 0.75, 0.4]])]
    # stage 1: x1 = maxfilter(u0) - 0.5 (u0 - y) = [[1, 1], [.4, .4]] - [[.1, .2], [.1/6, 0]]
    x.append(T([[0.9, 0.8], [0.4 - 0.1 / 6, 0.4]]))
    t.append(T([[0.25, 0.5], [0.5, 0.001]]))
    u.append(T([[0.8, 1.0], [0.2, 1.0]]))  # 0.6 / 0.5 = 1.2 and 0.4 / 0.001 clamp to 1
    # stage 2: maxfilter(u1) = 1 everywhere; 0.5 (u1 - y) = [[.3, .2], [.05, .3]]
    x.append(T([[0.7, 0.8], [0.95, 0.7]]))
    t.append(T([[0.5, 0.5], [0.5, 0.5]]))
    u.append(T([[0.4, 1.0], [0.2, 0.8]]))

    for k in range(3):
        torch.testing.assert_close(net.iem_cells[k].seen, x[k], rtol=0, atol=1e-12)
        torch.testing.assert_close(o.ts[k], t[k], rtol=0, atol=1e-12)
    assert len(o.ts) == 3 and o.t is o.ts[-1]
    torch.testing.assert_close(o.u, u[2], rtol=0, atol=1e-12)
    if use_nrm:
        with torch.no_grad():
            n = net.nrm_out(net.nrm_cells[2](net.nrm_cells[1](net.nrm_cells[0](net.nrm_stem(u[2])))))
        torch.testing.assert_close(o.n, n)
        torch.testing.assert_close(o.out, u[2] - n)
    else:
        assert torch.equal(o.n, torch.zeros_like(o.u))
        assert torch.equal(o.out, o.u)


def test_iem_stage_count() -> None:
    net = RUASNet(iem_stages=2, use_nrm=False)
    o = net(torch.rand(1, 3, 8, 8))
    assert len(o.ts) == 2 and len(net.iem_cells) == 2


# --- NRM, labels, alphas ----------------------------------------------------------------------------
def test_nrm_output_is_u_minus_n_by_hand() -> None:
    torch.manual_seed(3)
    net = RUASNet()
    y = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        o = net(y)
        n = net.nrm_out(net.nrm_cells[2](net.nrm_cells[1](net.nrm_cells[0](net.nrm_stem(o.u)))))
    assert torch.equal(o.n, n)
    assert torch.equal(o.out, o.u - n)


def test_shared_alphas() -> None:
    net = RUASNet()
    alphas = net.arch_parameters()
    assert len(alphas) == 2 and net.labels == ("iem", "nrm")
    for label, cells in (("iem", net.iem_cells), ("nrm", net.nrm_cells)):
        assert len(cells) == 3
        assert all(c.alpha is net.arch_parameters(label)[0] for c in cells)
    assert len(RUASNet(use_nrm=False).arch_parameters()) == 1


def test_weight_parameters_per_label() -> None:
    net = RUASNet()
    nrm = {id(p) for p in net.weight_parameters("nrm")}
    iem = {id(p) for p in net.weight_parameters("iem")}
    for p in [*net.nrm_stem.parameters(), *net.nrm_out.parameters(), *net.nrm_cells.parameters()]:
        assert id(p) in nrm
    assert nrm.isdisjoint(iem)
    assert iem == {id(p) for p in net.iem_cells.parameters()}
    assert nrm | iem == {id(p) for p in net.weight_parameters()}
    assert not ({id(p) for p in net.arch_parameters()} & (nrm | iem))


def test_supernet_forward_shapes_and_ranges() -> None:
    torch.manual_seed(4)
    net = RUASNet()
    y = torch.rand(1, 3, 16, 16)
    o = net(y)
    o.out.sum().backward()
    assert all(a.grad is not None for a in net.arch_parameters())
    o = RUASOutput(*(v.detach() if isinstance(v, torch.Tensor) else [t.detach() for t in v] for v in o))
    for v in (o.u, o.t, o.n, o.out, *o.ts):
        assert v.shape == (1, 3, 16, 16)
    for t in o.ts:
        assert float(t.min()) >= 0.001 and float(t.max()) <= 1.0
    assert float(o.u.min()) >= 0.0 and float(o.u.max()) <= 1.0


def test_bad_sizes_rejected() -> None:
    with pytest.raises(ValueError):
        RUASNet(iem_channels=4)
    with pytest.raises(ValueError):
        RUASNet(iem_stages=0)


# -- the global exposure step (exposure_key) ---------------------------------------------------------
def test_expose_scales_dark_images_to_the_key_and_leaves_bright_ones_alone() -> None:
    net = RUASNet(use_nrm=False, exposure_key=0.46)
    dark = 0.1 + 0.2 * torch.rand(1, 3, 8, 9, generator=torch.Generator().manual_seed(0))  # mean 0.2, max 0.3
    bright = 0.5 + 0.4 * torch.rand(1, 3, 8, 9, generator=torch.Generator().manual_seed(1))
    out = net.expose(torch.cat([dark, bright]))
    # t_0 = m / k; no pixel reaches 1 after the scaling, so the mean lands on the key exactly
    torch.testing.assert_close(out[0], dark[0] * (0.46 / dark.mean()), rtol=0, atol=1e-6)
    assert abs(out[0].mean().item() - 0.46) < 1e-6
    assert torch.equal(out[1], bright[0])  # mean above the key: t_0 = 1, never darkened
    saturating = torch.tensor([0.05, 0.05, 0.9]).view(1, 3, 1, 1).expand(1, 3, 4, 4)  # mean 1/3
    assert net.expose(saturating).max().item() == 1.0  # clipped, as u = y / t is
    assert torch.equal(RUASNet(use_nrm=False).expose(dark), dark)  # key 0: the released network


def test_exposure_key_feeds_the_exposed_image_to_every_stage() -> None:
    torch.manual_seed(0)
    keyed = compile_model(RUASNet(exposure_key=0.46), paper_genotype(True)).eval()
    plain = compile_model(RUASNet(), paper_genotype(True)).eval()
    plain.load_state_dict(keyed.state_dict())
    y = 0.2 * torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        got, want = keyed(y), plain(keyed.expose(y))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0) if isinstance(a, torch.Tensor) else None
    torch.testing.assert_close(got.out, want.out, rtol=0, atol=0)
    assert not torch.allclose(got.out, plain(y).out)


def test_exposure_key_is_checked_and_makes_the_network_untileable() -> None:
    from nasflow.infer.tiling import NotTileable

    with pytest.raises(ValueError, match="exposure_key"):
        RUASNet(exposure_key=1.5)
    with pytest.raises(NotTileable, match="whole image"):
        RUASNet(exposure_key=0.46).halo()


# -- the IEM's lift cap (max_lift_ev) ----------------------------------------------------------------
def test_max_lift_ev_caps_the_iem_lift_whatever_the_weights() -> None:
    """Weights that drive every illumination to its clamp: the released clamp lifts a dark pixel
    1000x, the capped network at most 2x (one stop), in the module and in the fast path alike."""
    from nasflow.tasks.ruas.fast import fast_ruas

    torch.manual_seed(0)
    capped = compile_model(RUASNet(use_nrm=False, max_lift_ev=1.0), paper_genotype(False)).eval()
    free = compile_model(RUASNet(use_nrm=False), paper_genotype(False)).eval()
    with torch.no_grad():
        for p in capped.parameters():
            p.fill_(0.0)
        for cell in capped.iem_cells:  # a large negative bias on the last conv: sigmoid -> 0
            last = [m for m in cell.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            last.bias.fill_(-30.0)
    free.load_state_dict(capped.state_dict())
    y = torch.full((1, 3, 16, 20), 0.01)
    with torch.no_grad():
        assert capped(y).out.max().item() == pytest.approx(0.02, rel=1e-5)
        assert free(y).out.min().item() == pytest.approx(1.0)  # 0.01 / 0.001, clipped
        assert fast_ruas(capped)(y).max().item() == pytest.approx(0.02, rel=1e-5)
    assert capped.lift_floor == 0.5 and free.lift_floor is None
    capped.train()  # training keeps the released clamp: the maps are not stuck at 0.5 without a gradient
    assert capped(y).out.min().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="max_lift_ev"):
        RUASNet(max_lift_ev=0.0)


def test_max_lift_ev_leaves_the_exposure_gain_alone() -> None:
    net = RUASNet(use_nrm=False, exposure_key=0.46, max_lift_ev=1.0)
    dark = torch.full((1, 3, 8, 8), 0.01)
    assert net.expose(dark).mean().item() == pytest.approx(0.46, rel=1e-5)  # a 46x gain: not capped at 2x
