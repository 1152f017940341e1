"""The DARTS cell (Liu et al. 2019): two inputs c_{k-2}, c_{k-1}, ``steps`` inner nodes.

Each inner node sums mixed edges from both inputs and all earlier inner nodes; the cell
output c_k concatenates the inner nodes. A reduction cell uses stride 2 on edges leaving the
inputs. Derivation keeps the 2 strongest incoming edges per node (``topk_per_node``).
"""

from __future__ import annotations

from typing import Any

from nasflow.core.graph import CellGraph, EdgeSpec, NodeSpec
from nasflow.core.ops import FactorizedReduce, ReLUConvBN
from nasflow.core.space import CellIO, CellSpace

DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class DartsCellSpace(CellSpace):
    """DARTS normal/reduction cell; cell options: reduction, reduction_prev, c_prev_prev, c_prev."""

    name = "darts"
    default_candidates = DARTS_OPS
    default_rule = "topk_per_node"

    def __init__(self, candidates: list[str] | None = None, steps: int = 4, affine: bool = False) -> None:
        super().__init__(candidates, affine=affine)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = steps
        self._graphs = {r: self._build_graph(r) for r in (False, True)}

    def _build_graph(self, reduction: bool) -> CellGraph:
        inputs = ("s0", "s1")
        inner = tuple(f"n{i}" for i in range(self.steps))
        edges = []
        for i, dst in enumerate(inner):
            for src in inputs + inner[:i]:
                stride = 2 if reduction and src in inputs else 1
                edges.append(EdgeSpec(f"{src}_{dst}", src, dst, stride))
        display = {"s0": "c_{k-2}", "s1": "c_{k-1}", **{n: str(i) for i, n in enumerate(inner)}}
        return CellGraph(
            inputs=inputs,
            nodes=tuple(NodeSpec(n) for n in inner),
            edges=tuple(edges),
            candidates=self.candidates,
            output=inner,
            fixed_wiring=False,
            output_label="c_{k}",
            display=display,
        )

    def graph(self, reduction: bool = False, **_: Any) -> CellGraph:
        return self._graphs[bool(reduction)]

    def io_modules(
        self,
        channels: int,
        reduction: bool = False,
        reduction_prev: bool = False,
        c_prev_prev: int | None = None,
        c_prev: int | None = None,
    ) -> CellIO:
        c_pp = channels if c_prev_prev is None else c_prev_prev
        c_p = channels if c_prev is None else c_prev
        pre0 = FactorizedReduce(c_pp, channels, self.affine) if reduction_prev else ReLUConvBN(c_pp, channels, 1, 1, 0, self.affine)
        pre1 = ReLUConvBN(c_p, channels, 1, 1, 0, self.affine)
        return CellIO(pre={"s0": pre0, "s1": pre1})
