"""nasflow.core.supernet / nasflow.core.cell.ArchAlphas: alphas apart from weights, label sharing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasflow.core.cell import ArchAlphas
from nasflow.errors import SpaceError
from nasflow.core.mixed import HardArgmax, Relaxation, RelaxedWeights, SoftmaxRelaxation
from nasflow.core.supernet import (
    Supernet,
    arch_parameters,
    find_arch,
    named_weight_parameters,
    supercells,
    tag,
    weight_parameters,
)

pytestmark = pytest.mark.usefixtures("single_thread")


class DetachedSoftmax(Relaxation):
    """Softmax of a detached alpha: the same forward value, no gradient to the alpha."""

    def __call__(self, alpha: torch.Tensor) -> RelaxedWeights:
        return SoftmaxRelaxation()(alpha.detach())


@pytest.fixture
def ruas_net(distill_net_cls, distill_space):
    """RUAS-like: 3 'iem' stages on 3 channels, conv 3->6, 3 'nrm' stages on 6, conv 6->3, + untagged head."""
    torch.manual_seed(0)
    net = distill_net_cls(distill_space, [("iem", 3, 3), ("nrm", 6, 3)], out_channels=3)
    net.head = nn.Conv2d(3, 3, 1)  # untagged: a weight of no label
    return net.double()


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.double)


# -- weights vs alphas ---------------------------------------------------------------------------
def test_weight_parameters_hold_no_alpha_and_arch_parameters_only_alphas(ruas_net) -> None:
    alphas = _ids(ruas_net.arch.alphas.values())
    assert len(alphas) == 2
    assert _ids(ruas_net.arch_parameters()) == alphas
    weights = ruas_net.weight_parameters()
    assert not (_ids(weights) & alphas)
    assert _ids(weights) | alphas == _ids(ruas_net.parameters())  # nothing else is missing
    assert len(weights) == len(_ids(weights))  # no duplicates
    names = [n for n, _ in ruas_net.named_weight_parameters()]
    assert not any(n.startswith("arch.") for n in names)


def test_weight_optimizer_never_moves_alphas(ruas_net) -> None:
    opt = torch.optim.SGD(ruas_net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    before = {k: v.detach().clone() for k, v in ruas_net.arch.alphas.items()}
    for _ in range(2):
        opt.zero_grad()
        ruas_net.head(ruas_net(_x())).square().mean().backward()
        opt.step()
    for k, v in ruas_net.arch.alphas.items():
        assert v.grad is not None and v.grad.abs().sum() > 0  # alphas got gradients ...
        assert torch.equal(v.detach(), before[k])  # ... but the weight optimizer left them alone


def test_per_label_weights_partition_the_tagged_weights(ruas_net) -> None:
    iem = _ids(ruas_net.weight_parameters("iem"))
    nrm = _ids(ruas_net.weight_parameters("nrm"))
    everything = _ids(ruas_net.weight_parameters())
    head = _ids(ruas_net.head.parameters())
    assert iem and nrm and not (iem & nrm)
    assert iem | nrm | head == everything and not (head & (iem | nrm))
    for cell in supercells(ruas_net, "iem"):
        assert _ids(cell.parameters()) <= iem
    for cell in supercells(ruas_net, "nrm"):
        assert _ids(cell.parameters()) <= nrm
    convs = [m for m in ruas_net.body if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(_ids(c.parameters()) <= nrm for c in convs)  # tagged 'nrm'
    assert _ids(ruas_net.weight_parameters("no_such_label")) == set()


def test_innermost_tag_wins() -> None:
    outer = tag(nn.Sequential(nn.Conv2d(1, 1, 1), tag(nn.Conv2d(1, 1, 1), "inner")), "outer")
    model = nn.ModuleDict({"m": outer, "arch": ArchAlphas()})
    assert _ids(weight_parameters(model, "outer")) == _ids(outer[0].parameters())
    assert _ids(weight_parameters(model, "inner")) == _ids(outer[1].parameters())
    names = dict(named_weight_parameters(model, "inner"))
    assert set(names) == {"m.1.weight", "m.1.bias"}
    root = tag(nn.Sequential(nn.Conv2d(1, 1, 1)), "root")  # a tagged root owns everything
    assert _ids(weight_parameters(root, "root")) == _ids(root.parameters())


def test_arch_parameters_by_label_and_errors(ruas_net) -> None:
    assert arch_parameters(ruas_net, "iem") == [ruas_net.arch["iem"]]
    assert arch_parameters(ruas_net, "nrm")[0] is ruas_net.arch.alphas["nrm"]
    with pytest.raises(SpaceError, match="no alpha labelled 'xyz' \\(labels: iem, nrm\\)"):
        arch_parameters(ruas_net, "xyz")
    with pytest.raises(SpaceError, match="found 0"):
        find_arch(nn.Conv2d(1, 1, 1))
    assert ruas_net.labels == ("iem", "nrm")


# -- label sharing -------------------------------------------------------------------------------
def test_cells_of_one_label_share_one_alpha_parameter(ruas_net) -> None:
    iem = supercells(ruas_net, "iem")
    assert len(iem) == 3 and len(supercells(ruas_net)) == 6
    assert len({id(c.alpha) for c in iem}) == 1
    assert iem[0].alpha is ruas_net.arch["iem"]
    assert supercells(ruas_net, "nrm")[0].alpha is not iem[0].alpha
    assert ruas_net.arch["iem"].shape == (7, 7)
    # The alpha is not a parameter of any cell (it lives once, in the ArchAlphas container).
    for cell in iem:
        assert not (_ids(cell.parameters()) & _ids(ruas_net.arch_parameters()))


def test_shared_alpha_gradient_is_the_sum_of_each_stage_contribution(ruas_net) -> None:
    alpha = ruas_net.arch["iem"]
    stages = supercells(ruas_net, "iem")
    x = _x(1)
    target = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.double)

    def loss() -> torch.Tensor:
        return (ruas_net(x) - target).square().mean()

    (full,) = torch.autograd.grad(loss(), alpha)
    parts = []
    for live in stages:  # only one stage lets the gradient reach the alpha
        for cell in stages:
            cell.relaxation = SoftmaxRelaxation() if cell is live else DetachedSoftmax()
        (g,) = torch.autograd.grad(loss(), alpha)
        parts.append(g)
    for cell in stages:
        cell.relaxation = SoftmaxRelaxation()
    assert all(p.abs().sum() > 0 for p in parts)
    assert not torch.allclose(parts[0], parts[1])
    torch.testing.assert_close(full, sum(parts), rtol=1e-9, atol=1e-12)
    # And plain backward accumulates the same into .grad.
    loss().backward()
    torch.testing.assert_close(alpha.grad, full, rtol=1e-12, atol=1e-14)


def test_ensure_same_label_different_shape_or_space_is_a_space_error(distill_space, darts_space) -> None:
    arch = ArchAlphas()
    a = arch.ensure("iem", distill_space.graph(), "distill")
    assert arch.ensure("iem", distill_space.graph(), "distill") is a  # same shape: the same tensor
    with pytest.raises(SpaceError, match="label 'iem' is already used by a cell of another shape"):
        arch.ensure("iem", darts_space.graph(), "darts")
    with pytest.raises(SpaceError, match="another shape"):
        from nasflow.spaces.distill_cell import DistillCellSpace

        arch.ensure("iem", DistillCellSpace(candidates=["skip_connect", "conv_1x1"]).graph(), "distill")
    with pytest.raises(SpaceError, match="already used by space 'distill'"):
        arch.ensure("iem", distill_space.graph(), "other")
    for bad in ("", "a.b"):
        with pytest.raises(SpaceError, match="without dots"):
            arch.ensure(bad, distill_space.graph(), "distill")
    assert arch.labels == ("iem",)
    assert arch.graph("iem") is distill_space.graph() and arch.space("iem") == "distill"


def test_supercell_for_a_label_of_another_shape_fails(distill_space, darts_space) -> None:
    net = Supernet()
    distill_space.supercell(net.arch, "cell", 3)
    with pytest.raises(SpaceError, match="another shape"):
        darts_space.supercell(net.arch, "cell", 4)


def test_alpha_init_is_small_and_reproducible(distill_space) -> None:
    a1, a2 = ArchAlphas(), ArchAlphas()
    p1 = a1.ensure("x", distill_space.graph(), "distill", generator=torch.Generator().manual_seed(3))
    p2 = a2.ensure("x", distill_space.graph(), "distill", generator=torch.Generator().manual_seed(3))
    assert torch.equal(p1, p2)
    assert 0 < p1.abs().max() < 1e-2  # 1e-3 * N(0, 1), as DARTS


# -- relaxation switching and helpers --------------------------------------------------------------
def test_set_relaxation_per_label(ruas_net) -> None:
    ruas_net.set_relaxation(HardArgmax(), "nrm")
    assert all(isinstance(c.relaxation, HardArgmax) for c in supercells(ruas_net, "nrm"))
    assert all(isinstance(c.relaxation, SoftmaxRelaxation) for c in supercells(ruas_net, "iem"))
    ruas_net.set_relaxation(HardArgmax())
    assert all(isinstance(c.relaxation, HardArgmax) for c in supercells(ruas_net))


def test_arch_probabilities_and_derive(ruas_net) -> None:
    with torch.no_grad():
        ruas_net.arch["iem"].zero_()
        ruas_net.arch["iem"][:, ruas_net.body[0].edges["c1_d"].op_names.index("conv_3x3")] = 2.0
    probs = ruas_net.arch_probabilities()
    assert set(probs) == {"iem", "nrm"}
    torch.testing.assert_close(probs["iem"].sum(-1), torch.ones(7, dtype=torch.double))
    assert not probs["iem"].requires_grad
    g = ruas_net.derive()
    assert g.space == "distill" and g.labels == ("iem", "nrm")
    assert g.ops("iem") == ["conv_3x3"] * 7
