"""Replay a CUDA inference function as CUDA graphs, one graph per input shape.

A searched low-light network is tiny (a few thousand parameters) and memory-bound: on a GPU its
time goes to launching a hundred small kernels, not to arithmetic. A CUDA graph records those
launches once and replays them with one call. Images of one size (a video, a folder of one camera,
the interior tiles of a tiled image) share one graph; each new shape is captured on first use, up
to ``max_graphs`` shapes, after which new shapes run eagerly.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger(__name__)

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    static_in: torch.Tensor
    static_out: torch.Tensor


class GraphedCall:
    """``fn(x)`` for CUDA tensors, replayed from a captured graph per (shape, dtype).

    ``fn`` must be a pure function of ``x`` (no host synchronisation, no data-dependent shapes).
    A capture that fails (an op that cannot be captured) is logged once and ``fn`` runs eagerly
    from then on, so the result never depends on whether graphs work. The returned tensor is a
    fresh copy: it stays valid after the next call.
    """

    def __init__(self, fn: Fn, *, max_graphs: int = 8, warmup: int = 2) -> None:
        self.fn = fn
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        # one memory pool shared by all graphs: a graph may reuse another's temporaries, and even
        # the memory of another's static output, which is safe because every replay's output is
        # cloned before any other graph runs
        self._pool = None
        self.disabled: str | None = None  # why graphs are off (None: on)

    @property
    def captured_shapes(self) -> list[tuple]:
        return list(self._graphs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled is not None or x.device.type != "cuda":
            return self.fn(x)
        key = (tuple(x.shape), x.dtype, x.device)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.max_graphs:
                return self.fn(x)
            try:
                entry = self._capture(x)
            except RuntimeError as err:  # an op that refuses capture: eager from now on
                self.disabled = f"CUDA graph capture failed ({err}); running eagerly"
                log.warning(self.disabled)
                torch.cuda.synchronize(x.device)
                return self.fn(x)
            self._graphs[key] = entry
        entry.static_in.copy_(x)
        entry.graph.replay()
        return entry.static_out.clone()

    def _capture(self, x: torch.Tensor) -> _Captured:
        static_in = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up outside the graph: lazy inits, cuDNN plans
            for _ in range(self.warmup):
                self.fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.fn(static_in)
        return _Captured(graph, static_in, static_out)
