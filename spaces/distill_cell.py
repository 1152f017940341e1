"""The RUAS distillation cell (from RFDN), searched per edge.

Seven mixed edges in the order c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4 and act = LeakyReLU(0.05)::

    d1 = act(c1_d(x));   r1 = act(c1_r(x) + x)
    d2 = act(c2_d(r1));  r2 = act(c2_r(r1) + r1)
    d3 = act(c3_d(r2));  r3 = act(c3_r(r2) + r2)
    r4 = act(c4(r3))
    out = conv1x1_{4C -> C}(cat[d1, d2, d3, r4])
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nasflow.core.graph import CellGraph, EdgeSpec, NodeSpec
from nasflow.core.space import CellIO, CellSpace

RUAS_OPS = ("skip_connect", "conv_1x1", "conv_3x3", "dilconv_3x3", "resconv_1x1", "resconv_3x3", "resdilconv_3x3")
EDGE_NAMES = ("c1_d", "c1_r", "c2_d", "c2_r", "c3_d", "c3_r", "c4")


class DistillCellSpace(CellSpace):
    """RUAS distillation cell: 7 edges, LeakyReLU(0.05), 1x1 fusion of 4C -> C."""

    name = "distill"
    default_candidates = RUAS_OPS
    default_rule = "argmax_per_edge"

    def __init__(self, candidates: list[str] | None = None, negative_slope: float = 0.05) -> None:
        super().__init__(candidates, affine=True)
        self.negative_slope = negative_slope
        self._graph = CellGraph(
            inputs=("x",),
            nodes=(
                NodeSpec("d1", activate=True),
                NodeSpec("r1", residual="x", activate=True),
                NodeSpec("d2", activate=True),
                NodeSpec("r2", residual="r1", activate=True),
                NodeSpec("d3", activate=True),
                NodeSpec("r3", residual="r2", activate=True),
                NodeSpec("r4", activate=True),
            ),
            edges=(
                EdgeSpec("c1_d", "x", "d1"),
                EdgeSpec("c1_r", "x", "r1"),
                EdgeSpec("c2_d", "r1", "d2"),
                EdgeSpec("c2_r", "r1", "r2"),
                EdgeSpec("c3_d", "r2", "d3"),
                EdgeSpec("c3_r", "r2", "r3"),
                EdgeSpec("c4", "r3", "r4"),
            ),
            candidates=self.candidates,
            output=("d1", "d2", "d3", "r4"),
            fixed_wiring=True,
            output_label="out",
        )

    def graph(self, **cell_options: Any) -> CellGraph:
        if cell_options:
            raise TypeError(f"distill cells take no options, got {sorted(cell_options)}")
        return self._graph

    def io_modules(self, channels: int, **cell_options: Any) -> CellIO:
        self.graph(**cell_options)
        fusion = nn.Conv2d(4 * channels, channels, kernel_size=1, bias=True)  # "c5" in the released code
        return CellIO(post=fusion, activation=nn.LeakyReLU(self.negative_slope))
