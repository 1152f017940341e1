"""Shared fixtures for the engine-core tests: tiny supernets built from the shipped spaces.

The network classes live here (not in an importable helper module) and reach tests through
session-scoped fixtures, so that hypothesis tests can use them without function-scoped state.
"""

from __future__ import annotations

from typing import Sequence

import pytest
import torch
from torch import nn

from nasflow.spaces.darts_cell import DartsCellSpace
from nasflow.spaces.distill_cell import DistillCellSpace
from nasflow.core.supernet import Supernet, tag


class DistillNet(Supernet):
    """Distill supercells in stages, RUAS style.

    ``plan`` is a sequence of ``(label, channels, stages)``; every stage of a label shares that
    label's alpha. A 3x3 conv (tagged with the new label) adapts the channels between groups,
    and ``out_channels`` adds a final 3x3 conv (tagged with the last label).
    """

    def __init__(
        self,
        space: DistillCellSpace,
        plan: Sequence[tuple[str, int, int]],
        in_channels: int | None = None,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_prev = plan[0][1] if in_channels is None else in_channels
        for label, channels, stages in plan:
            if channels != c_prev:
                layers.append(tag(nn.Conv2d(c_prev, channels, 3, padding=1), label))
            for _ in range(stages):
                layers.append(space.supercell(self.arch, label, channels))
            c_prev = channels
        if out_channels is not None:
            layers.append(tag(nn.Conv2d(c_prev, out_channels, 3, padding=1), plan[-1][0]))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DartsNet(Supernet):
    """A DARTS-like stack: stem conv, then cells named by ``kinds`` ('normal' / 'reduce').

    A reduction cell doubles the channels and halves the resolution; each kind is one label
    (its cells share one alpha), as in DARTS.
    """

    def __init__(self, space: DartsCellSpace, channels: int, kinds: Sequence[str], in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        c_pp = c_p = c = channels
        reduction_prev = False
        cells = []
        for kind in kinds:
            reduction = kind == "reduce"
            if reduction:
                c *= 2
            cells.append(
                space.supercell(
                    self.arch,
                    kind,
                    c,
                    reduction=reduction,
                    reduction_prev=reduction_prev,
                    c_prev_prev=c_pp,
                    c_prev=c_p,
                )
            )
            c_pp, c_p = c_p, space.steps * c
            reduction_prev = reduction
        self.cells = nn.ModuleList(cells)
        self.out_channels = c_p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics (and affine weights, if any), for eval-mode comparisons."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


@pytest.fixture(scope="session")
def distill_net_cls() -> type[DistillNet]:
    return DistillNet


@pytest.fixture(scope="session")
def darts_net_cls() -> type[DartsNet]:
    return DartsNet


@pytest.fixture(scope="session")
def randomize_bn():
    return randomize_batchnorm


@pytest.fixture(scope="session")
def distill_space() -> DistillCellSpace:
    return DistillCellSpace()


@pytest.fixture(scope="session")
def darts_space() -> DartsCellSpace:
    return DartsCellSpace()


@pytest.fixture
def single_thread():
    """Tiny tensors: one intra-op thread is faster and immune to oversubscribed CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
