"""Architecture gradients of bilevel DARTS (Liu et al. 2019), selectable by name.

Bilevel problem: ``min_a L_val(w*(a), a)`` with ``w*(a) = argmin_w L_train(w, a)``. DARTS
approximates ``w*(a)`` by one step of the weight optimizer, ``w' = w - xi * grad_w L_train(w, a)``
(eq. 6), and differentiates through it (eq. 7)::

    g_a = grad_a L_val(w', a) - xi * H v,   H = grad^2_{a,w} L_train(w, a),   v = grad_{w'} L_val(w', a)

The Hessian-vector product is either approximated by a central finite difference (eq. 8)::

    H v ~ [grad_a L_train(w+, a) - grad_a L_train(w-, a)] / (2 eps),   w+- = w +- eps v,   eps = 0.01 / ||v||

or computed exactly by double backpropagation, ``grad_a (grad_w L_train(w, a) . v)``.

Three hypergradients are registered in :data:`nasflow.registries.HYPERGRADIENTS`, all with the
signature ``fn(unroll, train_batch, val_batch) -> list[Tensor]`` (one gradient per alpha of the
group, in ``unroll.alpha_names`` order):

* ``first_order``: ``grad_a L_val(w, a)`` (eq. 6 with ``xi = 0``);
* ``finite_difference``: eq. 7 with eq. 8;
* ``exact_hvp``: eq. 7 with the exact Hessian-vector product.

The virtual step ``w'`` reproduces the *real* ``torch.optim.SGD`` update of the group's weights
(current lr, weight decay, momentum with the optimizer's existing buffer, dampening, Nesterov),
and ``xi`` is the exact derivative ``-dw'/dg`` of that update: the current lr, times
``1 - dampening`` once a momentum buffer exists and times ``1 + momentum (1 - dampening)`` with
Nesterov (DARTS' own setting, momentum without dampening or Nesterov, gives ``xi = lr``).

When the real weight step clips the gradient norm (``Unroll.max_grad_norm > 0``, from
``search.grad_clip``: ``torch.nn.utils.clip_grad_norm_`` over the group's weights before SGD), the
virtual step clips too, ``g -> c g`` with ``c = min(1, M / (||g|| + 1e-6))`` exactly as torch does,
and ``v`` goes through the exact (symmetric) Jacobian of that map before the Hessian-vector product::

    d(c g)/dg = c (I - g g^T / (||g|| (||g|| + 1e-6)))   if c < 1,   I otherwise

(``xi`` is applied first, per weight, since different param groups may have different lrs).

None of these functions changes the real model (parameters and buffers, e.g. BatchNorm running
statistics, are bitwise as before), the real optimizer's state, or any ``.grad``: the caller
assigns the returned gradients.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from nasflow.errors import ConfigError
from nasflow.registries import HYPERGRADIENTS

LossFn = Callable[[nn.Module, Any], torch.Tensor]
"""Scalar loss of a model on a batch."""

FD_RADIUS = 0.01  # DARTS: eps = 0.01 / ||v||


@dataclass
class Unroll:
    """Everything a hypergradient needs for one group of weights and alphas.

    ``virtual`` is a persistent copy of ``model`` (made once by :meth:`create`, overwritten in
    place by every :func:`virtual_step`); ``optimizer`` is the real SGD optimizer of the group's
    weights, read but never stepped. ``max_grad_norm`` is the norm the real weight step clips the
    group's gradient to (``clip_grad_norm_`` before ``optimizer.step()``; 0: no clipping).
    """

    model: nn.Module
    virtual: nn.Module
    weight_names: list[str]
    alpha_names: list[str]
    optimizer: torch.optim.Optimizer
    train_loss: LossFn
    arch_loss: LossFn
    max_grad_norm: float = 0.0

    @classmethod
    def create(
        cls,
        model: nn.Module,
        weight_names: Sequence[str],
        alpha_names: Sequence[str],
        optimizer: torch.optim.Optimizer,
        train_loss: LossFn,
        arch_loss: LossFn,
        max_grad_norm: float = 0.0,
    ) -> "Unroll":
        """Check the names and make the virtual copy (one ``copy.deepcopy`` for the whole run)."""
        weight_names, alpha_names = list(weight_names), list(alpha_names)
        params = dict(model.named_parameters())
        for kind, names in (("weight", weight_names), ("alpha", alpha_names)):
            unknown = [n for n in names if n not in params]
            if unknown:
                raise ConfigError(f"hypergradient: unknown {kind} parameter(s) {unknown}")
            if len(set(names)) != len(names):
                raise ConfigError(f"hypergradient: duplicate {kind} names in {names}")
        if not alpha_names:
            raise ConfigError("hypergradient: a group needs at least one alpha")
        both = sorted(set(weight_names) & set(alpha_names))
        if both:
            raise ConfigError(f"hypergradient: parameters {both} are listed as both weights and alphas")
        # Relaxations hold only hyperparameters (and maybe a generator): share, do not copy them.
        memo: dict[int, Any] = {}
        for module in model.modules():
            relaxation = getattr(module, "relaxation", None)
            if relaxation is not None and not isinstance(relaxation, (nn.Module, torch.Tensor)):
                memo[id(relaxation)] = relaxation
        virtual = copy.deepcopy(model, memo)
        for p in virtual.parameters():
            p.grad = None
        return cls(model, virtual, weight_names, alpha_names, optimizer, train_loss, arch_loss, float(max_grad_norm))

    def weights(self, model: nn.Module | None = None) -> list[nn.Parameter]:
        """The group's weights in ``model`` (default: the real model), in ``weight_names`` order."""
        params = dict((model if model is not None else self.model).named_parameters())
        return [params[n] for n in self.weight_names]

    def alphas(self, model: nn.Module | None = None) -> list[nn.Parameter]:
        """The group's alphas in ``model`` (default: the real model), in ``alpha_names`` order."""
        params = dict((model if model is not None else self.model).named_parameters())
        return [params[n] for n in self.alpha_names]


# -- helpers --------------------------------------------------------------------------------------


def _grads(
    loss: torch.Tensor, tensors: Sequence[torch.Tensor], create_graph: bool = False
) -> list[torch.Tensor | None]:
    """``autograd.grad`` with ``allow_unused=True``; ``None`` where a tensor is unused."""
    if not tensors:
        return []
    if not loss.requires_grad:
        return [None] * len(tensors)
    return list(torch.autograd.grad(loss, list(tensors), allow_unused=True, create_graph=create_graph))


def _zero_filled(grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(t) if g is None else g.detach() for g, t in zip(grads, like)]


@contextlib.contextmanager
def _buffers_kept(model: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``model`` bitwise on exit (a train-mode forward updates BN stats)."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in saved:
                b.copy_(s)


def _scalar(x: Any) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def _check_sgd(optimizer: torch.optim.Optimizer) -> None:
    if not isinstance(optimizer, torch.optim.SGD):
        raise ConfigError(
            "hypergradient: the second-order virtual step reproduces torch.optim.SGD only; "
            f"the weight optimizer is {type(optimizer).__name__}"
        )
    for group in optimizer.param_groups:
        if group.get("maximize", False):
            raise ConfigError("hypergradient: the weight optimizer uses maximize=True, which the virtual step rejects")


def _group_index(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    return {id(p): group for group in optimizer.param_groups for p in group["params"]}


def _sync_state(model: nn.Module, virtual: nn.Module) -> None:
    """Copy the FULL state of ``model`` into ``virtual`` in place: every parameter and buffer of
    every module (other groups' modules included), each module's train/eval mode and each
    supercell's relaxation."""
    real_t = dict(model.named_parameters(remove_duplicate=False))
    real_t.update(model.named_buffers(remove_duplicate=False))
    virt_t = dict(virtual.named_parameters(remove_duplicate=False))
    virt_t.update(virtual.named_buffers(remove_duplicate=False))
    if real_t.keys() != virt_t.keys():
        diff = sorted(set(real_t) ^ set(virt_t))
        raise RuntimeError(f"the model's structure changed after Unroll.create (differs in {diff[:5]}); create a new Unroll")
    with torch.no_grad():
        for name, src in real_t.items():
            dst = virt_t[name]
            if dst.shape != src.shape or dst.dtype != src.dtype or dst.device != src.device:
                raise RuntimeError(
                    f"'{name}' is {src.dtype} {tuple(src.shape)} on {src.device} in the model but {dst.dtype} "
                    f"{tuple(dst.shape)} on {dst.device} in the virtual copy; create the Unroll after moving the model"
                )
            dst.copy_(src)
    real_m = dict(model.named_modules(remove_duplicate=False))
    for name, vm in virtual.named_modules(remove_duplicate=False):
        rm = real_m.get(name)
        if rm is None:
            raise RuntimeError(f"the model's structure changed after Unroll.create (module '{name}'); create a new Unroll")
        vm.training = rm.training
        relaxation = getattr(rm, "relaxation", None)
        if relaxation is not None and not isinstance(relaxation, (nn.Module, torch.Tensor)):
            vm.relaxation = relaxation


EPS_CLIP = 1e-6  # torch.nn.utils.clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6)


@dataclass
class _Step:
    """What one virtual step leaves for the hypergradient besides ``w'`` (in ``u.virtual``)."""

    xis: list[float]
    """Per weight, ``xi = -dw'/d(clipped g)`` (lr times the momentum/Nesterov factor)."""
    grads: list[torch.Tensor]
    """``g = grad_w L_train(w, a)``, zero-filled, detached, before clipping."""
    clip: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    """``(c, ||g||, c < 1)`` as 0-dim tensors when the group clips (``max_grad_norm > 0``)."""
    graph: list[torch.Tensor | None] | None = None
    """``grad_w L_train(w, a)`` with its graph (``create_graph=True``), for the exact HVP; else None."""


def _clip_jacobian(step: _Step, vector: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``J^T vector`` for the clipping map ``g -> c(g) g`` (``J`` is symmetric); ``vector`` if none.

    ``c = M / (n + e)``, ``n = ||g||``: ``d(c g)/dg = c (I - g g^T / (n (n + e)))`` while ``c < 1``, and
    the identity where the clamp to 1 is active. Stays on the device (no host sync).
    """
    if step.clip is None:
        return list(vector)
    c, norm, active = step.clip
    dot = sum((g * v).sum() for g, v in zip(step.grads, vector))
    # torch.where: no nan from 0/0 when the norm is zero (then c is clamped to 1 and the branch is unused)
    scale = torch.where(active, dot / (norm * (norm + EPS_CLIP)), torch.zeros_like(dot))
    return [c * (v - scale * g) for g, v in zip(step.grads, vector)]


def _virtual_step(u: Unroll, train_batch: Any, create_graph: bool = False) -> tuple[dict[str, torch.Tensor], _Step]:
    """``w'`` written into ``u.virtual`` and, per weight, ``xi = -dw'/dg`` (see the module doc).

    ``create_graph=True`` (exact HVP) keeps the graph of ``grad_w L_train(w, a)`` in the returned
    step for a later double backward, and then does NOT restore the real model's buffers: restoring
    BatchNorm running statistics in place would invalidate the saved tensors of that graph, so the
    caller must wrap the virtual step and the double backward in :func:`_buffers_kept`.
    """
    _check_sgd(u.optimizer)
    groups = _group_index(u.optimizer)
    weights = u.weights()
    missing = [n for n, p in zip(u.weight_names, weights) if id(p) not in groups]
    if missing:
        raise ConfigError(f"hypergradient: weights {missing[:5]} are not in the weight optimizer")

    # 1) full state of the real model -> persistent virtual copy
    _sync_state(u.model, u.virtual)

    # 2) g = grad_w L_train(w, a) on the real model (with its graph only when the exact HVP reuses it)
    graph: list[torch.Tensor | None] | None = None
    with contextlib.nullcontext() if create_graph else _buffers_kept(u.model):
        loss = u.train_loss(u.model, train_batch)
        raw = _grads(loss, weights, create_graph=create_graph)
    del loss
    grads = _zero_filled(raw, weights)
    if create_graph:
        graph = raw
    del raw

    # 3) the real weight step clips the group's gradient norm first (BilevelStrategy.weight_step:
    #    clip_grad_norm_(weights, grad_clip), then SGD); same norm, coefficient and product as torch.
    #    Under torch.distributed the real step clips the rank-AVERAGED gradient, while this uses the
    #    local one: the documented approximation of the virtual step (as for g itself).
    clip = None
    step_grads = grads
    if u.max_grad_norm > 0:
        with torch.no_grad():
            norm = torch.nn.utils.get_total_norm(grads, 2.0)
            coef = u.max_grad_norm / (norm + EPS_CLIP)
            c = torch.clamp(coef, max=1.0)
            step_grads = [g * c.to(g.device) for g in grads]
        clip = (c, norm, coef < 1.0)

    # 4) w' = w - lr * d, d exactly as torch.optim.SGD computes it (without touching its state)
    virtual = u.weights(u.virtual)
    out: dict[str, torch.Tensor] = {}
    xis: list[float] = []
    with torch.no_grad():
        for name, w, g, vw in zip(u.weight_names, weights, step_grads, virtual):
            group = groups[id(w)]
            lr = _scalar(group["lr"])
            wd = _scalar(group["weight_decay"])
            mu = _scalar(group["momentum"])
            damp = _scalar(group["dampening"])
            nesterov = bool(group["nesterov"])
            d = g
            if wd != 0:
                d = d.add(w, alpha=wd)
            coef_d = 1.0  # d(d)/dg
            if mu != 0:
                buf = u.optimizer.state.get(w, {}).get("momentum_buffer")
                if buf is None:
                    new_buf = d  # torch: buf = clone(d_p) on the first step (no dampening)
                else:
                    new_buf = buf.mul(mu).add_(d, alpha=1 - damp)
                    coef_d = 1 - damp
                if nesterov:
                    d = d.add(new_buf, alpha=mu)
                    coef_d = 1 + mu * coef_d
                else:
                    d = new_buf
            vw.copy_(w)
            vw.add_(d, alpha=-lr)  # in place: the virtual model's own tensor now holds w'
            out[name] = vw.detach()
            xis.append(lr * coef_d)
    return out, _Step(xis, grads, clip, graph)


def virtual_step(u: Unroll, train_batch: Any) -> dict[str, torch.Tensor]:
    """One virtual step of the real SGD optimizer, written into ``u.virtual`` in place (DARTS eq. 6).

    Copies the model's full state into the persistent virtual copy, computes
    ``g = grad_w L_train(w, a)`` on the real model (unused weights get zero), clips it as
    ``clip_grad_norm_(weights, u.max_grad_norm)`` would (when ``max_grad_norm > 0``) and writes
    ``w' = w - lr * d`` into the virtual copy's group weights, where ``d`` is the direction
    ``torch.optim.SGD.step`` would take for the clipped ``g``: weight decay, momentum with the
    optimizer's existing buffer (``buf = d`` if none yet), dampening, Nesterov, and the *current* lr
    of the weight's param group. The real weights, buffers and optimizer state are left untouched.

    Returns ``{weight name: w'}`` (detached views of the virtual copy's tensors).
    Raises :class:`~nasflow.errors.ConfigError` unless the optimizer is SGD without ``maximize``.
    """
    return _virtual_step(u, train_batch)[0]
def hvp_finite_difference(
    u: Unroll, train_batch: Any, vector: Sequence[torch.Tensor], radius: float = FD_RADIUS
) -> list[torch.Tensor]:
    """``H vector``, ``H = grad^2_{a,w} L_train(w, a)``, by the central difference of DARTS eq. 8.

    ``[grad_a L_train(w+, a) - grad_a L_train(w-, a)] / (2 eps)`` with ``w+- = w +- eps vector``,
    ``eps = radius / ||vector||`` (global norm over the group's weights; DARTS: radius 0.01); zero
    if the norm is zero. The real weights are perturbed in place and restored bitwise from saved
    copies, also on error.

    Piecewise-linear activations (ReLU, LeakyReLU) make ``grad_a L_train`` discontinuous in ``w``:
    a perturbation that moves a pre-activation across zero adds ``jump / (2 eps)`` to the estimate.
    """
    weights, alphas = u.weights(), u.alphas()
    norm = math.sqrt(sum(float(v.detach().double().pow(2).sum()) for v in vector))
    if norm == 0.0 or not math.isfinite(norm):
        if not math.isfinite(norm):
            raise FloatingPointError("hypergradient: the finite-difference direction is not finite")
        return [torch.zeros_like(a) for a in alphas]
    eps = radius / norm
    saved = [w.detach().clone() for w in weights]
    try:
        with _buffers_kept(u.model):
            with torch.no_grad():
                for w, v in zip(weights, vector):
                    w.add_(v, alpha=eps)  # w+ = w + eps v
            plus = _zero_filled(_grads(u.train_loss(u.model, train_batch), alphas), alphas)
            with torch.no_grad():
                for w, s, v in zip(weights, saved, vector):
                    w.copy_(s)
                    w.add_(v, alpha=-eps)  # w- = w - eps v
            minus = _zero_filled(_grads(u.train_loss(u.model, train_batch), alphas), alphas)
    finally:
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)  # exact restore (w + eps v - eps v is not bitwise w)
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def hvp_autograd(
    u: Unroll,
    train_batch: Any,
    vector: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor | None] | None = None,
) -> list[torch.Tensor]:
    """``H vector`` exactly: ``grad_a (grad_w L_train(w, a) . vector)`` by double backprop on the real model.

    ``grads``: ``grad_w L_train(w, a)`` already computed with ``create_graph=True`` (the virtual step
    of :func:`exact_hvp`); its graph is consumed (freed) here. Without it, the training loss and its
    gradient are recomputed.
    """
    alphas = u.alphas()
    if grads is None:
        with _buffers_kept(u.model):
            loss = u.train_loss(u.model, train_batch)
            return hvp_autograd(u, train_batch, vector, _grads(loss, u.weights(), create_graph=True))
    dot: torch.Tensor | None = None
    for g, v in zip(grads, vector):
        if g is not None:
            term = (g * v.detach()).sum()
            dot = term if dot is None else dot + term
    if dot is None or not dot.requires_grad:
        return [torch.zeros_like(a) for a in alphas]
    return _zero_filled(_grads(dot, alphas), alphas)


def _unrolled_step(
    u: Unroll, train_batch: Any, val_batch: Any, create_graph: bool = False
) -> tuple[list[torch.Tensor], list[torch.Tensor], _Step]:
    """``grad_a L_val(w', a)``, the HVP vector and the virtual step (see :func:`_unrolled`)."""
    _, step = _virtual_step(u, train_batch, create_graph=create_graph)
    v_alphas, v_weights = u.alphas(u.virtual), u.weights(u.virtual)
    loss = u.arch_loss(u.virtual, val_batch)
    grads = _zero_filled(_grads(loss, v_alphas + v_weights), v_alphas + v_weights)
    del loss
    dalpha, v = grads[: len(v_alphas)], grads[len(v_alphas) :]
    return dalpha, _clip_jacobian(step, [xi * g for xi, g in zip(step.xis, v)]), step


def _unrolled(u: Unroll, train_batch: Any, val_batch: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``grad_a L_val(w', a)`` and ``J^T (xi * v)``, ``v = grad_{w'} L_val(w', a)``, on the virtual copy.

    ``J`` is the Jacobian of the gradient clipping (the identity without it), so the HVP of this
    vector is ``-dL_val(w')/dg`` contracted with ``H``.
    """
    dalpha, xv, _ = _unrolled_step(u, train_batch, val_batch)
    return dalpha, xv
@HYPERGRADIENTS.register("first_order")
def first_order(u: Unroll, train_batch: Any, val_batch: Any) -> list[torch.Tensor]:
    """First-order DARTS: ``grad_a L_val(w, a)`` on the real model (eq. 6 with ``xi = 0``)."""
    alphas = u.alphas()
    with _buffers_kept(u.model):
        loss = u.arch_loss(u.model, val_batch)
        return _zero_filled(_grads(loss, alphas), alphas)


@HYPERGRADIENTS.register("finite_difference")
def finite_difference(u: Unroll, train_batch: Any, val_batch: Any) -> list[torch.Tensor]:
    """Second-order DARTS, eq. 7 with the finite-difference Hessian-vector product of eq. 8.

    ``g_a = grad_a L_val(w', a) - xi * [grad_a L_train(w+, a) - grad_a L_train(w-, a)] / (2 eps)``,
    ``w'`` from :func:`virtual_step`, ``w+- = w +- eps v``, ``v = grad_{w'} L_val(w', a)``,
    ``eps = 0.01 / ||v||``.
    """
    dalpha, xv = _unrolled(u, train_batch, val_batch)
    hv = hvp_finite_difference(u, train_batch, xv)
    return [d - h for d, h in zip(dalpha, hv)]


@HYPERGRADIENTS.register("exact_hvp")
def exact_hvp(u: Unroll, train_batch: Any, val_batch: Any) -> list[torch.Tensor]:
    """Second-order DARTS, eq. 7 with the exact Hessian-vector product (the oracle of eq. 8).

    ``g_a = grad_a L_val(w', a) - xi * grad_a (grad_w L_train(w, a) . v)``, ``v = grad_{w'} L_val(w', a)``.
    ``grad_w L_train(w, a)`` is computed once, with its graph, by the virtual step and reused for the
    double backward (no second training forward); the real buffers are restored after it.
    """
    with _buffers_kept(u.model):
        dalpha, xv, step = _unrolled_step(u, train_batch, val_batch, create_graph=True)
        graph, step.graph = step.graph, None
        hv = hvp_autograd(u, train_batch, xv, grads=graph)
        del graph
    return [d - h for d, h in zip(dalpha, hv)]
