"""Hypergradients of bilevel DARTS (nasflow.search.hypergrad) on a tiny two-label distill supernet."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nasflow.search import hypergrad
from nasflow.errors import ConfigError
from nasflow.search.hypergrad import Unroll, exact_hvp, finite_difference, first_order, virtual_step
from nasflow.registries import HYPERGRADIENTS
from nasflow.core.space import build_space
from nasflow.core.supernet import Supernet, tag


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add overhead


GROUP_ALPHAS = ["arch.alphas.a"]


class TinyNet(Supernet):
    """Two supercells of label "a", one of label "b", a "b"-tagged 1x1 conv (and BatchNorm), a buffer.

    ``smooth=True`` swaps the cells' LeakyReLU for tanh. The distill cell's LeakyReLU makes
    grad_a L_train *discontinuous* in w (the backward pass through a kink jumps from slope 1 to
    0.05), so a central difference of radius 0.01 that crosses a kink is off by jump / (2 eps);
    on this tiny net that gives O(1) relative errors. The FD-vs-exact comparisons therefore use the
    smooth variant (plus one LeakyReLU test with a small radius). ``norm=True`` adds a train-mode
    BatchNorm, whose running statistics every forward updates (its extra curvature also makes the
    radius-0.01 FD error seed-dependent, up to 5e-3, so the numeric tests leave it out).
    """

    space = build_space("distill")

    def __init__(self, seed: int = 0, smooth: bool = True, norm: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a1 = self.space.supercell(self.arch, "a", 2)
        self.a2 = self.space.supercell(self.arch, "a", 2)
        self.b = self.space.supercell(self.arch, "b", 2)
        if smooth:
            for cell in (self.a1, self.a2, self.b):
                cell.act = nn.Tanh()
        self.norm = tag(nn.BatchNorm2d(2), "b") if norm else nn.Identity()
        self.head = tag(nn.Conv2d(2, 2, 1), "b")
        self.register_buffer("gain", torch.tensor([1.5]))
        with torch.no_grad():  # alphas away from uniform, so every term of the hypergradient matters
            for alpha in self.arch.alphas.values():
                alpha.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.b(self.a2(self.a1(x))))) * self.gain


def mse(model, batch) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


def batches(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    mk = lambda: torch.randn(2, 2, 6, 6, generator=g, dtype=torch.float64)  # noqa: E731
    return (mk(), mk()), (mk(), mk())  # (train x, y), (val x, y)


def group_names(model: TinyNet, label: str = "a") -> list[str]:
    return [n for n, _ in model.named_weight_parameters(label)]


def make(
    momentum: float = 0.9,
    weight_decay: float = 3e-4,
    nesterov: bool = False,
    dampening: float = 0.0,
    real_step: bool = True,
    lr: float = 0.05,
    smooth: bool = True,
    norm: bool = False,
):
    """Model (float64), its group-"a" Unroll and the batches; optionally one real SGD step first."""
    model = TinyNet(smooth=smooth, norm=norm).double()
    train, val = batches()
    names = group_names(model)
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(
        [
            {"params": [params[n] for n in names]},
            {"params": model.weight_parameters("b"), "lr": 0.3},  # another group, another lr
        ],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
        dampening=dampening,
    )
    if real_step:  # so the momentum buffer exists
        weights = model.weight_parameters()
        grads = torch.autograd.grad(mse(model, train), weights, allow_unused=True)
        for p, g in zip(weights, grads):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
    u = Unroll.create(model, names, GROUP_ALPHAS, opt, mse, mse)
    return model, opt, u, train, val


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    state.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return state


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = snapshot(model)
    assert now.keys() == before.keys()
    for name, t in before.items():
        assert torch.equal(now[name], t), f"{name} changed"


def optimizer_snapshot(opt: torch.optim.Optimizer):
    return copy.deepcopy(opt.state_dict())


def assert_same_optimizer(opt: torch.optim.Optimizer, before) -> None:
    now = opt.state_dict()
    assert now["param_groups"] == before["param_groups"]
    assert now["state"].keys() == before["state"].keys()
    for k, st in before["state"].items():
        assert now["state"][k].keys() == st.keys()
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                assert torch.equal(now["state"][k][key], val)
            else:
                assert now["state"][k][key] == val


def no_grads(*models: nn.Module) -> bool:
    return all(p.grad is None for m in models for p in m.parameters())


def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b)))
    den = torch.sqrt(sum((y**2).sum() for y in b))
    return float(num / den)


def train_grad(model: nn.Module, names: list[str], batch) -> list[torch.Tensor]:
    params = dict(model.named_parameters())
    ws = [params[n] for n in names]
    gs = torch.autograd.grad(mse(model, batch), ws, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(ws, gs)]


def unrolled_oracle(model, opt, names, train, val, max_norm: float = 0.0) -> list[torch.Tensor]:
    """d/da L_val(w'(a), a) by plain autograd through a differentiable copy of the SGD step.

    ``max_norm > 0``: through torch's gradient clipping too, ``g * clamp(max_norm / (||g|| + 1e-6), max=1)``.
    """
    params = dict(model.named_parameters())
    ws = [params[n] for n in names]
    gs = torch.autograd.grad(mse(model, train), ws, create_graph=True, allow_unused=True)
    gs = [torch.zeros_like(w) if g is None else g for w, g in zip(ws, gs)]
    if max_norm > 0:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs]))
        gs = [g * torch.clamp(max_norm / (norm + 1e-6), max=1.0) for g in gs]
    group = opt.param_groups[0]
    lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
    damp, nesterov = group["dampening"], group["nesterov"]
    new = {}
    for n, w, g in zip(names, ws, gs):
        d = g + wd * w.detach()
        if mu:
            buf = opt.state[w].get("momentum_buffer")
            nb = d if buf is None else mu * buf + (1 - damp) * d
            d = d + mu * nb if nesterov else nb
        new[n] = w.detach() - lr * d
    x, y = val
    loss = F.mse_loss(functional_call(model, new, (x,)), y)
    return list(torch.autograd.grad(loss, [params[n] for n in GROUP_ALPHAS]))


# -- 1. finite difference vs exact Hessian-vector product -----------------------------------------


def test_finite_difference_matches_exact_hvp():
    model, opt, u, train, val = make()
    fd = finite_difference(u, train, val)
    ex = exact_hvp(u, train, val)
    # the virtual copy now holds w': the first term of eq. 7, to isolate the correction
    v_alphas = u.alphas(u.virtual)
    base = list(torch.autograd.grad(mse(u.virtual, val), v_alphas))
    corr_fd = [f - b for f, b in zip(fd, base)]
    corr_ex = [e - b for e, b in zip(ex, base)]
    assert rel(corr_ex, ex) > 1e-3, "the second-order correction is too small for this test to mean anything"
    assert rel(fd, ex) < 1e-3  # measured 1.5e-4
    assert rel(corr_fd, corr_ex) < 1e-2  # the H v term alone: 2.7e-3, the O(eps^2) truncation error
    assert not torch.equal(fd[0], first_order(u, train, val)[0])


def test_finite_difference_error_is_second_order_in_the_radius():
    """Central difference: the error falls 100x per 10x smaller radius (a wrong 2*eps would not converge)."""
    model, opt, u, train, val = make()
    dalpha, xv = hypergrad._unrolled(u, train, val)
    ex = hypergrad.hvp_autograd(u, train, xv)
    errs = [rel(hypergrad.hvp_finite_difference(u, train, xv, radius=r), ex) for r in (1e-2, 1e-3)]
    assert errs[1] < 1e-4
    assert 50 < errs[0] / errs[1] < 200


def test_hvp_helpers_agree_on_a_random_direction():
    model, opt, u, train, val = make()
    g = torch.Generator().manual_seed(3)
    vec = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in u.weights()]
    fd = hypergrad.hvp_finite_difference(u, train, vec)
    ex = hypergrad.hvp_autograd(u, train, vec)
    assert float(ex[0].abs().max()) > 0
    assert rel(fd, ex) < 1e-3
    zero = hypergrad.hvp_finite_difference(u, train, [torch.zeros_like(v) for v in vec])
    assert all(torch.equal(z, torch.zeros_like(z)) for z in zero)


def test_hvp_finite_difference_on_leaky_relu_cells_with_a_small_radius():
    """The real distill cells (LeakyReLU): FD converges to the exact product once no kink is crossed."""
    model, opt, u, train, val = make(smooth=False)
    g = torch.Generator().manual_seed(3)
    vec = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in u.weights()]
    ex = hypergrad.hvp_autograd(u, train, vec)
    assert rel(hypergrad.hvp_finite_difference(u, train, vec, radius=1e-4), ex) < 1e-6


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(nesterov=True),
        dict(dampening=0.2),
        dict(real_step=False, nesterov=True),
        dict(momentum=0.0),
    ],
    ids=["momentum", "nesterov", "dampening", "nesterov-first-step", "plain"],
)
def test_exact_hvp_is_the_derivative_of_the_unrolled_step(kw):
    """eq. 7 is exact for the one-step unroll: compare with autograd through w'(a) itself."""
    model, opt, u, train, val = make(**kw)
    opt.param_groups[0]["lr"] = 0.0123
    oracle = unrolled_oracle(model, opt, u.weight_names, train, val)
    ex = exact_hvp(u, train, val)
    assert rel(ex, oracle) < 1e-9
    assert rel(finite_difference(u, train, val), oracle) < 1e-3


# -- 1b. gradient clipping (Unroll.max_grad_norm, the real step's clip_grad_norm_) ---------------------


def group_norm(model, u, train) -> float:
    return float(torch.nn.utils.get_total_norm(train_grad(model, u.weight_names, train)))


def clipped(model, opt, u, max_norm: float) -> Unroll:
    return Unroll.create(model, u.weight_names, GROUP_ALPHAS, opt, mse, mse, max_grad_norm=max_norm)


@pytest.mark.parametrize(
    "kw", [dict(), dict(nesterov=True), dict(real_step=False), dict(dampening=0.2)],
    ids=["momentum", "nesterov", "first-step", "dampening"],
)
def test_exact_hvp_is_the_derivative_of_the_clipped_unrolled_step(kw, monkeypatch):
    """With clipping active (c < 1) eq. 7 needs the exact Jacobian of the clip, c (I - g g^T / (n (n + 1e-6)))."""
    model, opt, u, train, val = make(**kw)
    opt.param_groups[0]["lr"] = 0.3  # large: the clip scales the step down
    max_norm = 0.3 * group_norm(model, u, train)  # c ~ 0.3
    uc = clipped(model, opt, u, max_norm)
    oracle = unrolled_oracle(model, opt, u.weight_names, train, val, max_norm)
    ex = exact_hvp(uc, train, val)
    assert rel(ex, oracle) < 1e-9
    assert rel(finite_difference(uc, train, val), oracle) < 1e-3
    # the test means something: the unclipped unroll, and c I without the projection, are both wrong
    assert rel(exact_hvp(u, train, val), oracle) > 1e-3
    monkeypatch.setattr(hypergrad, "_clip_jacobian", lambda step, vec: [step.clip[0] * x for x in vec])
    assert rel(exact_hvp(uc, train, val), oracle) > 1e-4


def test_inactive_clipping_changes_nothing():
    model, opt, u, train, val = make()
    uc = clipped(model, opt, u, 3.0 * group_norm(model, u, train))
    for fn in (finite_difference, exact_hvp):
        assert torch.equal(fn(uc, train, val)[0], fn(u, train, val)[0])


@pytest.mark.parametrize("scale", [0.3, 3.0, None], ids=["active", "inactive", "zero-gradient"])
def test_clip_jacobian_is_the_vjp_of_torch_clipping(scale):
    """``_clip_jacobian`` == vjp of ``g -> g * clamp(M / (||g|| + 1e-6), max=1)`` (torch's formula)."""
    gen = torch.Generator().manual_seed(5)
    gs = [torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)]
    if scale is None:
        gs, scale = [torch.zeros_like(g) for g in gs], 1.0
    vec = [torch.randn(g.shape, generator=gen, dtype=torch.float64) for g in gs]
    max_norm = scale * float(torch.nn.utils.get_total_norm(gs)) or 0.5

    def clip(*g):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in g]))
        return tuple(x * torch.clamp(max_norm / (norm + 1e-6), max=1.0) for x in g)

    norm = torch.nn.utils.get_total_norm(gs)
    coef = max_norm / (norm + 1e-6)
    step = hypergrad._Step([1.0, 1.0], gs, (torch.clamp(coef, max=1.0), norm, coef < 1.0))
    got = hypergrad._clip_jacobian(step, vec)
    if float(norm) > 0:
        expect = torch.autograd.functional.vjp(clip, tuple(gs), tuple(vec))[1]
    else:
        expect = vec  # the clamp is active: identity
    for a, b in zip(got, expect):
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)
        assert torch.isfinite(a).all()


@pytest.mark.parametrize("scale", [0.3, 3.0], ids=["active", "inactive"])
@pytest.mark.parametrize("nesterov, real_step", [(False, True), (True, False)], ids=["buffer", "first-step-nesterov"])
def test_virtual_step_equals_real_clipped_sgd_step(scale, nesterov, real_step):
    """w' == clip_grad_norm_(group weights, M) then optimizer.step() on a clone of model and optimizer."""
    model, opt, u, train, val = make(nesterov=nesterov, real_step=real_step)
    opt.param_groups[0]["lr"] = 0.0123
    g = train_grad(model, u.weight_names, train)
    max_norm = scale * float(torch.nn.utils.get_total_norm(g))
    uc = clipped(model, opt, u, max_norm)

    w_prime = virtual_step(uc, train)

    ref_model, ref_opt = copy.deepcopy((model, opt))
    ref_params = dict(ref_model.named_parameters())
    ref_ws = [ref_params[n] for n in u.weight_names]
    for w, gi in zip(ref_ws, g):
        w.grad = gi.clone()
    total = torch.nn.utils.clip_grad_norm_(ref_ws, max_norm)
    assert (float(total) > max_norm) == (scale < 1)
    ref_opt.step()
    unclipped = {n: t.clone() for n, t in virtual_step(u, train).items()}
    for n in u.weight_names:
        assert torch.allclose(w_prime[n], ref_params[n], rtol=0, atol=1e-12), n
    differs = any(not torch.equal(w_prime[n], unclipped[n]) for n in u.weight_names)
    assert differs == (scale < 1)


# -- 2. nothing real changes ----------------------------------------------------------------------


@pytest.mark.parametrize("fn", [first_order, finite_difference, exact_hvp], ids=lambda f: f.__name__)
@pytest.mark.parametrize("norm", [False, True], ids=["", "batchnorm"])
def test_real_model_and_optimizer_untouched(fn, norm):
    model, opt, u, train, val = make(norm=norm)
    before, opt_before = snapshot(model), optimizer_snapshot(opt)
    if norm:
        mse(model, train)  # a plain train-mode forward does move the running statistics
        assert not torch.equal(model.norm.running_mean, before["norm.running_mean"])
        with torch.no_grad():
            model.norm.running_mean.copy_(before["norm.running_mean"])
            model.norm.running_var.copy_(before["norm.running_var"])
            model.norm.num_batches_tracked.copy_(before["norm.num_batches_tracked"])
    grads = fn(u, train, val)
    assert len(grads) == 1 and grads[0].shape == model.arch["a"].shape
    assert_same_state(model, before)
    assert_same_optimizer(opt, opt_before)
    assert no_grads(model, u.virtual)


def test_finite_difference_restores_weights_when_the_loss_raises():
    model, opt, u, train, val = make(norm=True)
    before = snapshot(model)
    calls = {"n": 0}

    def flaky(m, batch):
        calls["n"] += 1
        if calls["n"] == 3:  # 1: virtual step, 2: w+, 3: w- (weights perturbed right now)
            raise RuntimeError("boom")
        return mse(m, batch)

    u.train_loss = flaky
    with pytest.raises(RuntimeError, match="boom"):
        finite_difference(u, train, val)
    assert calls["n"] == 3
    assert_same_state(model, before)


# -- 3. the virtual copy holds exactly what the real SGD step would give ------------------------


@pytest.mark.parametrize(
    "nesterov, real_step, dampening",
    [(False, True, 0.0), (True, True, 0.0), (False, False, 0.0), (True, False, 0.0), (False, True, 0.25), (False, False, 0.25)],
    ids=["buffer", "buffer-nesterov", "first-step", "first-step-nesterov", "buffer-dampening", "first-step-dampening"],
)
def test_virtual_step_equals_real_sgd_step(nesterov, real_step, dampening):
    model, opt, u, train, val = make(nesterov=nesterov, real_step=real_step, dampening=dampening)
    opt.param_groups[0]["lr"] = 0.0123  # as after a scheduler step: the current lr must be used
    g = train_grad(model, u.weight_names, train)
    assert any(float(x.abs().max()) > 0 for x in g)

    w_prime = virtual_step(u, train)

    ref_model, ref_opt = copy.deepcopy((model, opt))
    ref_params = dict(ref_model.named_parameters())
    for n, gi in zip(u.weight_names, g):
        ref_params[n].grad = gi.clone()
    ref_opt.step()
    virtual = dict(u.virtual.named_parameters())
    real = dict(model.named_parameters())
    assert list(w_prime) == u.weight_names
    for n, gi in zip(u.weight_names, g):
        assert torch.allclose(virtual[n], ref_params[n], rtol=0, atol=1e-12), n
        assert w_prime[n].data_ptr() == virtual[n].data_ptr()  # a view of the virtual copy's tensor
        if float(gi.abs().max()) > 0:
            assert not torch.equal(virtual[n], real[n]), f"{n}: w' == w"


def test_virtual_step_uses_current_lr():
    model, opt, u, train, val = make()
    name = u.weight_names[0]
    w = dict(model.named_parameters())[name].detach().clone()
    deltas = []
    for lr in (0.05, 0.0123):
        opt.param_groups[0]["lr"] = lr
        deltas.append(w - virtual_step(u, train)[name])
    assert torch.allclose(deltas[1], deltas[0] * (0.0123 / 0.05), rtol=1e-10, atol=1e-15)
    # with a real scheduler too
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    opt.step()  # no grads: a no-op, keeps the scheduler's order warning quiet
    sched.step()
    lr_now = opt.param_groups[0]["lr"]
    delta = w - virtual_step(u, train)[name]
    assert torch.allclose(delta, deltas[0] * (lr_now / 0.05), rtol=1e-10, atol=1e-15)


def test_unused_weights_are_zero_filled():
    """A training loss that never reaches a2: zero gradient, still weight decay + momentum, as SGD with grad 0."""
    model, opt, u, train, val = make()
    u.train_loss = lambda m, b: F.mse_loss(m.head(m.norm(m.b(m.a1(b[0])))), b[1])
    w_prime = virtual_step(u, train)
    ref_model, ref_opt = copy.deepcopy((model, opt))
    ref = dict(ref_model.named_parameters())
    g = torch.autograd.grad(u.train_loss(model, train), u.weights(), allow_unused=True)
    assert any(x is None for x in g)
    for n, gi, w in zip(u.weight_names, g, u.weights()):
        ref[n].grad = torch.zeros_like(w) if gi is None else gi
    ref_opt.step()
    for n in u.weight_names:
        assert torch.allclose(w_prime[n], ref[n], rtol=0, atol=1e-12)
    fd, ex = finite_difference(u, train, val), exact_hvp(u, train, val)
    assert rel(fd, ex) < 1e-3


def test_zero_lr_reduces_to_first_order():
    model, opt, u, train, val = make()
    opt.param_groups[0]["lr"] = 0.0
    fo = first_order(u, train, val)
    for fn in (finite_difference, exact_hvp):
        assert torch.allclose(fn(u, train, val)[0], fo[0], rtol=1e-12, atol=1e-15)


# -- 4. the virtual copy carries the other module's current state ---------------------------------


def test_virtual_copy_has_the_other_modules_current_state():
    model, opt, u, train, val = make()
    with torch.no_grad():  # move everything outside group "a" after the copy was made
        for p in model.weight_parameters("b"):
            p.add_(torch.randn_like(p))
        model.arch["b"].add_(1.0)
        model.gain.fill_(0.7)
    model.eval()
    virtual_step(u, train)
    group = set(u.weight_names)
    virtual = dict(u.virtual.named_parameters())
    virtual.update(u.virtual.named_buffers())
    real = dict(model.named_parameters())
    real.update(model.named_buffers())
    assert virtual.keys() == real.keys()
    differ = {n for n in real if not torch.equal(real[n], virtual[n])}
    assert differ and differ <= group
    for n in real:
        if n not in group:
            assert torch.equal(virtual[n], real[n]), n
    assert not u.virtual.training and not u.virtual.b.training
    assert u.virtual.a1.relaxation is model.a1.relaxation
    # shared alphas stay shared in the copy
    assert u.virtual.a1.alpha is u.virtual.a2.alpha is u.virtual.arch["a"]


# -- 5. first order -------------------------------------------------------------------------------


def test_first_order_is_the_plain_alpha_gradient():
    model, opt, u, train, val = make()
    expect = torch.autograd.grad(mse(model, val), [model.arch["a"]])
    got = first_order(u, train, val)
    assert torch.equal(got[0], expect[0])
    assert no_grads(model)
    both = Unroll.create(model, u.weight_names, ["arch.alphas.b", "arch.alphas.a"], opt, mse, mse)
    expect = torch.autograd.grad(mse(model, val), [model.arch["b"], model.arch["a"]])
    assert all(torch.equal(g, e) for g, e in zip(first_order(both, train, val), expect))


# -- 6. registry and configuration errors ----------------------------------------------------------


def test_registry_resolves_names():
    assert HYPERGRADIENTS.get("first_order") is first_order
    assert HYPERGRADIENTS.get("finite_difference") is finite_difference
    assert HYPERGRADIENTS.get("exact_hvp") is exact_hvp
    assert {"first_order", "finite_difference", "exact_hvp"} <= set(HYPERGRADIENTS.names())


def test_non_sgd_or_maximize_raises_config_error():
    model, opt, u, train, val = make()
    adam = torch.optim.Adam(u.weights(), lr=1e-3)
    ua = Unroll.create(model, u.weight_names, GROUP_ALPHAS, adam, mse, mse)
    for fn in (finite_difference, exact_hvp):
        with pytest.raises(ConfigError, match="SGD"):
            fn(ua, train, val)
    with pytest.raises(ConfigError):
        virtual_step(ua, train)
    first_order(ua, train, val)  # needs no optimizer
    opt.param_groups[0]["maximize"] = True
    with pytest.raises(ConfigError, match="maximize"):
        virtual_step(u, train)


def test_create_checks_names():
    model, opt, u, train, val = make()
    with pytest.raises(ConfigError):
        Unroll.create(model, ["nope"], GROUP_ALPHAS, opt, mse, mse)
    with pytest.raises(ConfigError):
        Unroll.create(model, u.weight_names + GROUP_ALPHAS, GROUP_ALPHAS, opt, mse, mse)
    lonely = Unroll.create(model, u.weight_names, GROUP_ALPHAS, torch.optim.SGD(model.weight_parameters("b"), lr=0.1), mse, mse)
    with pytest.raises(ConfigError, match="not in the weight optimizer"):
        virtual_step(lonely, train)


# -- 7. one persistent virtual copy -----------------------------------------------------------------


def test_virtual_copy_is_persistent_and_follows_the_real_model():
    model, opt, u, train, val = make()
    virtual = u.virtual
    ptrs = {n: p.data_ptr() for n, p in virtual.named_parameters()}
    first = {n: t.clone() for n, t in virtual_step(u, train).items()}
    # one real step moves w (and the momentum buffer); the next virtual step must start from there
    weights = model.weight_parameters()
    for p, g in zip(weights, torch.autograd.grad(mse(model, train), weights, allow_unused=True)):
        p.grad = g
    opt.step()
    opt.zero_grad(set_to_none=True)
    second = virtual_step(u, train)
    assert u.virtual is virtual
    assert {n: p.data_ptr() for n, p in u.virtual.named_parameters()} == ptrs
    assert any(not torch.equal(first[n], second[n]) for n in first)
    ref_model, ref_opt = copy.deepcopy((model, opt))
    ref = dict(ref_model.named_parameters())
    for n, g in zip(u.weight_names, train_grad(model, u.weight_names, train)):
        ref[n].grad = g
    ref_opt.step()
    for n in u.weight_names:
        assert torch.allclose(second[n], ref[n], rtol=0, atol=1e-12)
