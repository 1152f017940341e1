"""Second-order DARTS, end to end, against a *numerical* derivative of the unrolled objective.

``F(a) = L_val(w'(a), a)`` with ``w'(a) = w - xi * (mu * buf + grad_w L_train(w, a) + wd * w)`` (one
step of SGD with momentum and weight decay, the optimizer's real buffer ``buf``) is evaluated with
``torch.func.functional_call`` only, independent of nasflow's virtual copy, and differentiated by
central differences in single alpha entries. The architecture gradients of ``finite_difference`` and
``exact_hvp`` must match it (sign and scale of the second-order term), both called directly and as
``BilevelStrategy.arch_step`` hands them to the Adam optimizer of the alphas.

With gradient clipping (``max_grad_norm = M > 0``, as ``search.grad_clip`` makes the real weight step
do), ``grad_w L_train`` is replaced by ``c g``, ``c = min(1, M / (||g|| + 1e-6))`` (torch's
``clip_grad_norm_``), in ``F`` as in the real step; the tests choose ``M`` so that ``c < 1``.

The cells use tanh instead of LeakyReLU (smooth in w and a, see tests/test_hypergrad.py) and float64.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nasflow.config import from_dict
from nasflow.core.genotype import Genotype
from nasflow.search.hypergrad import Unroll, exact_hvp, finite_difference, first_order
from nasflow.registries import STRATEGIES
from nasflow.schema import SearchConfig
from nasflow.core.space import build_space
from nasflow.core.supernet import Supernet, tag
from nasflow.task import Task

H = 1e-5  # central-difference step in alpha
ALPHA = "arch.alphas.a"
# (row, op) entries of the [7 edges, ops] alpha that the numerical derivative probes
ENTRIES = [(0, 0), (0, 2), (1, 1), (3, 0), (4, 2), (6, 1)]


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add overhead


class TinyNet(Supernet):
    """Two distill supercells sharing label "a" (tanh), then a 1x1 head conv (also label "a")."""

    def __init__(self, candidates: list[str] | None = None, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        space = build_space("distill", {"candidates": candidates} if candidates else None)
        self.c1 = space.supercell(self.arch, "a", 2)
        self.c2 = space.supercell(self.arch, "a", 2)
        for cell in (self.c1, self.c2):
            cell.act = nn.Tanh()
        self.head = tag(nn.Conv2d(2, 2, 1), "a")
        with torch.no_grad():  # away from uniform, so every term of the hypergradient matters
            self.arch.alphas["a"].normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.c2(self.c1(x)))


def mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


def data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    mk = lambda: torch.randn(4, 2, 6, 6, generator=g, dtype=torch.float64)  # noqa: E731
    return (mk(), mk()), (mk(), mk())  # (train x, y), (val x, y)


def unrolled_objective(model, opt, weight_names, train, val, alpha: torch.Tensor, max_norm: float = 0.0) -> float:
    """``F(alpha) = L_val(w'(alpha), alpha)``, by functional_call only (the model is not touched).

    ``max_norm > 0``: the gradient is clipped first, ``g * min(1, max_norm / (||g|| + 1e-6))`` (global
    norm over the weights), and the clipping must be active (``||g|| > max_norm``).
    """
    params = dict(model.named_parameters())
    w = {n: params[n].detach().clone().requires_grad_(True) for n in weight_names}
    x, y = train
    loss = F.mse_loss(functional_call(model, {**w, ALPHA: alpha}, (x,)), y)
    grads = torch.autograd.grad(loss, list(w.values()), allow_unused=True)
    group = opt.param_groups[0]
    lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
    assert group["dampening"] == 0 and not group["nesterov"]
    grads = [torch.zeros_like(wi) if g is None else g for wi, g in zip(w.values(), grads)]
    if max_norm > 0:
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        assert norm > max_norm, f"clipping is not active (||g|| = {norm} <= {max_norm})"
        c = min(1.0, max_norm / (norm + 1e-6))
        grads = [c * g for g in grads]
    new = {}
    with torch.no_grad():
        for (n, wi), g in zip(w.items(), grads):
            buf = opt.state[params[n]].get("momentum_buffer") if mu else None
            step = g + wd * wi + (mu * buf if buf is not None else 0.0)
            new[n] = wi - lr * step
        x, y = val
        return float(F.mse_loss(functional_call(model, {**new, ALPHA: alpha}, (x,)), y))


def numerical_grad(model, opt, weight_names, train, val, max_norm: float = 0.0) -> dict[tuple[int, int], float]:
    alpha = dict(model.named_parameters())[ALPHA].detach()
    out = {}
    for r, c in ENTRIES:
        e = torch.zeros_like(alpha)
        e[r, c] = H
        fp = unrolled_objective(model, opt, weight_names, train, val, alpha + e, max_norm)
        fm = unrolled_objective(model, opt, weight_names, train, val, alpha - e, max_norm)
        out[(r, c)] = (fp - fm) / (2 * H)
    return out


def max_rel_err(grad: torch.Tensor, num: dict[tuple[int, int], float]) -> float:
    """Error over the probed entries, relative to the largest probed entry (no blow-up near zero)."""
    scale = max(abs(v) for v in num.values())
    return max(abs(float(grad[k]) - v) for k, v in num.items()) / scale


def real_sgd_step(model, opt, names, batch) -> None:
    params = dict(model.named_parameters())
    ws = [params[n] for n in names]
    for p, g in zip(ws, torch.autograd.grad(mse(model, batch), ws, allow_unused=True)):
        p.grad = g
    opt.step()
    opt.zero_grad(set_to_none=True)


CANDIDATES = {"ruas": None, "pools": ["skip_connect", "max_pool_3x3", "avg_pool_3x3"]}


# clip: max_grad_norm (0: none). The group's gradient norms here are ~0.45 (ruas) and ~2.2 (pools): 0.1
# clips both hard (c ~ 0.2 and 0.05), and a larger lr keeps the second-order term large.
CLIP = {"noclip": (0.0, 0.1), "clip": (0.1, 1.0)}  # (max_grad_norm, current lr)


@pytest.mark.parametrize("clip", sorted(CLIP))
@pytest.mark.parametrize("space", sorted(CANDIDATES))
def test_hypergradients_match_numerical_derivative_of_unrolled_objective(space, clip):
    max_norm, lr = CLIP[clip]
    model = TinyNet(CANDIDATES[space]).double()
    train, val = data()
    names = [n for n, _ in model.named_weight_parameters()]
    opt = torch.optim.SGD([p for _, p in model.named_weight_parameters()], lr=0.2, momentum=0.9, weight_decay=3e-4)
    real_sgd_step(model, opt, names, train)  # a momentum buffer exists from now on
    opt.param_groups[0]["lr"] = lr  # as after a scheduler step: the current lr is xi
    u = Unroll.create(model, names, [ALPHA], opt, mse, mse, max_grad_norm=max_norm)

    num = numerical_grad(model, opt, names, train, val, max_norm)
    ex = exact_hvp(u, train, val)[0]
    fd = finite_difference(u, train, val)[0]
    fo = first_order(u, train, val)[0]
    assert max_rel_err(ex, num) < 1e-7  # measured ~1e-9
    assert max_rel_err(fd, num) < 1e-3  # O(eps^2) error of the eq. 8 central difference
    # the test means something: first order is far from the unrolled derivative
    assert max_rel_err(fo, num) > 1e-2
    if max_norm:  # and the clip matters: the unclipped unroll is far off (measured O(1))
        unclipped = Unroll.create(model, names, [ALPHA], opt, mse, mse)
        assert max_rel_err(exact_hvp(unclipped, train, val)[0], num) > 1e-2


# -- the same through BilevelStrategy.arch_step -----------------------------------------------------


class TinyTask(Task):
    name = "tiny"

    def __init__(self) -> None:
        super().__init__({}, seed=0, device=torch.device("cpu"))
        (self.xt, self.yt), (self.xv, self.yv) = data()

    def build_supernet(self) -> Supernet:
        return TinyNet().double()

    def search_batches(self, epoch: int) -> tuple[Iterable, Iterable]:
        return [(self.xt, self.yt)] * 2, [(self.xv, self.yv)] * 2

    def train_batches(self, epoch: int) -> Iterable:
        return [(self.xt, self.yt)]

    def loss(self, model: nn.Module, batch) -> Mapping[str, torch.Tensor]:
        return {"loss": mse(model, batch)}

    def evaluate(self, model: nn.Module, genotype: Genotype) -> dict[str, float]:
        return {}


@pytest.mark.parametrize("grad_clip", [0.0, 0.1], ids=["noclip", "clip"])
@pytest.mark.parametrize("hyper, tol", [("exact_hvp", 1e-6), ("finite_difference", 1e-3)])
def test_bilevel_arch_step_applies_the_unrolled_gradient(hyper, tol, grad_clip):
    """``search.grad_clip`` reaches the virtual step: with it, the gradient is that of the clipped unroll."""
    task = TinyTask()
    model = task.build_supernet()
    config = from_dict(SearchConfig, {"strategy": "darts", "epochs": 2, "hypergradient": hyper, "grad_clip": grad_clip,
                                      "weight_optimizer": {"lr": 0.2, "momentum": 0.9, "weight_decay": 3e-4}})
    s = STRATEGIES.get("darts")(model, task, config, 2)
    (g,) = s.groups
    assert g.unroll.max_grad_norm == grad_clip
    (wb, _), (ab, _) = task.search_batches(0)[0], task.search_batches(0)[1]

    seen: list[tuple[dict, torch.Tensor]] = []
    real_step = g.a_opt.step

    def spy(*args, **kwargs):
        # called inside arch_step, before the weight step of this search step: the real state is (w, buf, lr)
        alpha = dict(model.named_parameters())[ALPHA]
        seen.append((numerical_grad(model, g.w_opt, g.weight_names, wb, ab, grad_clip), alpha.grad.detach().clone()))
        return real_step(*args, **kwargs)

    g.a_opt.step = spy
    for _ in range(3):  # step 0 has no momentum buffer yet; steps 1, 2 use it, at a cosine-decayed lr
        s.step(wb, ab)
    assert len(seen) == 3
    assert g.w_opt.state[g.unroll.weights()[0]].get("momentum_buffer") is not None
    for num, grad in seen:
        assert max_rel_err(grad, num) < tol
