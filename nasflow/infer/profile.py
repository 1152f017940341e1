"""Measuring the cost table (:mod:`nasflow.core.cost`) with the fast path's own kernels.

An op is priced where the fast path runs it: inside a fused cell (:mod:`nasflow.infer.fastpath`),
whose residual folds, activation post-ops and merged convs change what an op costs (measured on a
loaded 2-core CPU, a 1x1 conv timed alone cost several times its share of a fused cell). A cell
with the op on every edge is timed against a cell with the reference op (the identity) on every
edge, and the difference per edge is the op's cost (:func:`measure_ops`). Cells run through
:func:`~nasflow.infer.fastpath.fast_model` (oneDNN on channels-last tensors, width packing, the
inference policy) on a ``1 x C x H x W`` input: the median of ``repeats`` forwards after
``warmup`` ones.

What no edge owns (the reference cells, stems, the network's own arithmetic) is the network's base term, fitted once per network from one measured
genotype (:func:`nasflow.core.cost.fit_base`); ``benchmarks/cost_model.py`` measures how well
``base + sum of op latencies`` predicts the fast path's time of other genotypes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from nasflow.core.cell import FanIn
from nasflow.core.cost import CostKey, CostTable, OpCost, device_name, static_cost
from nasflow.core.genotype import GenoEdge
from nasflow.core.space import CellSpace
from nasflow.infer.fastpath import CL, FastOptions, fast_model

Timer = Callable[[nn.Module, torch.Tensor], float]
"""``(module, input) -> ms`` per forward of ``module`` on ``input`` (a plain, not yet fast, module)."""


def median_ms(fn: Callable[[], Any], repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _fast_op(module: nn.Module, options: FastOptions) -> nn.Module:
    """The fast path of an op inside a network: channels-last in (no copy when it is), channels-last out."""
    return fast_model(module, replace(options, contiguous_outputs=False))


@dataclass
class FastPathTimer:
    """The default :data:`Timer`: ``build(module, options)`` timed by :func:`median_ms` on a channels-last input.

    ``build`` defaults to :func:`~nasflow.infer.fastpath.fast_model` returning channels-last outputs:
    an op as it runs inside a fast network, whose tensors stay channels-last. A whole network is
    timed with ``build=fast_model`` (or a task's own fast forward), which also pays the per-image
    layout conversion of its output; ``threads`` intra-op threads during the forwards (the built
    module applies them: :func:`~nasflow.infer.fastpath.inference_policy`).
    """

    threads: int = 1
    repeats: int = 15
    warmup: int = 3
    build: Callable[[nn.Module, FastOptions], nn.Module] = _fast_op

    def __call__(self, module: nn.Module, x: torch.Tensor) -> float:
        fast = self.build(module, FastOptions(threads=self.threads))
        x = x.contiguous(memory_format=CL)
        return median_ms(lambda: fast(x), self.repeats, self.warmup)


def interleaved_ms(models: Mapping[str, nn.Module], x: torch.Tensor, timer: Timer, rounds: int = 3) -> dict[str, float]:
    """Each model's median over ``rounds`` rounds of ``timer(model, x)``, the models interleaved in every
    round: a burst of load from another process on a shared machine lands on all of them alike
    instead of on whichever model ran during it."""
    runs: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(max(1, rounds)):
        for name, model in models.items():
            runs[name].append(timer(model, x))
    return {name: statistics.median(v) for name, v in runs.items()}


def reference_op(space: CellSpace) -> str:
    """The op whose uniform cell is the baseline of the marginal costs: the identity, else the zero op,
    else the first candidate."""
    specs = space.op_specs
    for test in (lambda s: s.is_identity, lambda s: s.is_zero, lambda s: True):
        for spec in specs:
            if test(spec):
                return spec.name
    raise AssertionError("a space has at least one candidate")  # pragma: no cover - CellSpace checks it


def uniform_cell(space: CellSpace, op: str, channels: int) -> nn.Module:
    """A plain cell of ``space`` (default cell options) with ``op`` on every edge, eval mode, fixed weights."""
    graph = space.graph()
    edges = tuple(GenoEdge(op, e.src, e.dst) for e in graph.edges)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return FanIn(space.cell(edges, channels)).eval()


def measure_ops(space: CellSpace, channels: int, height: int, width: int, timer: Timer) -> dict[str, float]:
    """Milliseconds per edge of each candidate op of ``space``, measured in a fused cell.

    For each op ``o`` a cell with ``o`` on all ``E`` edges is timed; the op's cost is
    ``(t(o) - t(ref)) / E`` (clamped at 0) with ``ref`` the :func:`reference_op` (cost 0): what an
    edge adds as the fast path runs it, residual folds, activation post-ops and merges included.
    The reference cell's own time (its activations, output fusion) belongs to the network's base.
    """
    n_edges = len(space.graph().edges)
    x = torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(0))
    times = {op: timer(uniform_cell(space, op, channels), x) for op in space.candidates}
    ref = times[reference_op(space)]
    return {op: max(0.0, (t - ref) / n_edges) for op, t in times.items()}


def profile_space(
    space: CellSpace, channels: Iterable[int], height: int, width: int, *, threads: int = 1,
    table: CostTable | None = None, timer: Timer | None = None, refresh: bool = False, rounds: int = 3,
) -> CostTable:
    """``table`` (a new one if None) with an entry for every candidate of ``space`` at every channel count.

    A channel count whose entries are all in the table already (this device, thread count, torch
    version) is kept unless ``refresh``. ``timer`` defaults to :class:`FastPathTimer` with ``threads``.
    :func:`measure_ops` runs ``rounds`` times, interleaved over the channel counts, and each op keeps
    its median, so that a burst of load from another process on a shared machine spreads out.
    """
    table = table if table is not None else CostTable()
    timer = timer or FastPathTimer(threads=threads)
    device = device_name("cpu")

    def key(op: str, c: int) -> CostKey:
        return CostKey(space.name, op, c, height, width, device, threads)

    todo = [c for c in dict.fromkeys(channels) if refresh or any(table.get(key(op, c)) is None for op in space.candidates)]
    runs: dict[int, list[dict[str, float]]] = {c: [] for c in todo}
    for _ in range(max(1, rounds)):
        for c in todo:
            runs[c].append(measure_ops(space, c, height, width, timer))
    for c in todo:
        for op in space.candidates:
            flops, params = static_cost(op, c, height, width)
            table.put(OpCost(key(op, c), statistics.median([r[op] for r in runs[c]]), flops, params))
    return table


def format_table(table: CostTable, ops: Iterable[str] | None = None) -> str:
    """A markdown table of the entries (of ``ops`` only, if given): space, op, channels, size, ms, MFLOPs, params."""
    wanted = None if ops is None else set(ops)
    lines = ["| space | op | channels | size (HxW) | ms per edge | MFLOPs | params | device | threads |",
             "|---|---|---:|---|---:|---:|---:|---|---:|"]
    for e in table:
        k = e.key
        if wanted is not None and k.op not in wanted:
            continue
        ms = "-" if e.ms is None else f"{e.ms:.3f}"
        lines.append(f"| {k.space} | {k.op} | {k.channels} | {k.height}x{k.width} | {ms} | {e.flops / 1e6:.2f} | {e.params} "
                     f"| {k.device} | {k.threads} |")
    return "\n".join(lines)
