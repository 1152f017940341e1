"""FLOPs counting (nasflow.core.flops): the RUAS paper's figures, and counts that follow the network."""

from __future__ import annotations

import torch
from torch import nn

from nasflow.core.compile import compile_model
from nasflow.core.flops import count_flops
from nasflow.tasks.ruas.model import RUASNet, paper_genotype


def test_paper_genotype_gives_the_papers_gflops_at_600x400() -> None:
    # design notes: IEM 0.279, IEM + NRM 0.825 GFLOPs at 600x400 (multiply-add = 1 FLOP, bias included)
    iem = compile_model(RUASNet(use_nrm=False), paper_genotype(False))
    full = compile_model(RUASNet(), paper_genotype(True))
    assert round(count_flops(iem, 1, 3, 400, 600) / 1e9, 3) == 0.279
    assert round(count_flops(full, 1, 3, 400, 600) / 1e9, 3) == 0.825


def test_counts_follow_kernels_strides_groups_and_bias() -> None:
    net = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 5 * 5, 10))
    expected = (8 * 5 * 5) * (2 * 3 * 3) + 10 * (200 + 1)
    assert count_flops(net, 1, 4, 10, 10) == expected
    assert count_flops(net, 3, 4, 10, 10) == 3 * expected  # per batch
    weight = net[0].weight.detach().clone()
    assert net[0].weight.device.type == "cpu" and torch.equal(net[0].weight, weight)  # model untouched
