"""The cost model: the table file, the sum over a genotype's edges, the fitted base, the profiler's arithmetic.

Timing itself is measured in ``benchmarks/cost_model.py`` (predicted vs measured fast-path ms); here a
deterministic fake timer (a module's parameter count) makes every sum exact.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from nasflow.cli import main
from nasflow.core.compile import compile_model
from nasflow.core.cost import (
    CostKey, CostTable, OpCost, cell_sites, cells_cost, device_name, fit_base, static_cost, table_price,
)
from nasflow.core.genotype import GenoEdge, Genotype
from nasflow.core.space import build_space
from nasflow.core.supernet import Supernet
from nasflow.errors import ConfigError
from nasflow.infer.profile import measure_ops, profile_space


def n_params(module: nn.Module, x: torch.Tensor) -> float:
    """A fake timer: additive over a network's modules, deterministic."""
    return float(sum(p.numel() for p in module.parameters()))


class TwoLabels(Supernet):
    """Two cells sharing label ``a`` (2 channels), one cell ``b`` (3 channels), convs between."""

    def __init__(self) -> None:
        super().__init__()
        space = build_space("distill")
        self.a = nn.ModuleList(space.supercell(self.arch, "a", 2) for _ in range(2))
        self.up = nn.Conv2d(2, 3, 1)
        self.b = space.supercell(self.arch, "b", 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for cell in self.a:
            x = cell(x)
        return self.b(self.up(x))


def uniform(op: str) -> Genotype:
    graph = build_space("distill").graph()
    edges = tuple(GenoEdge(op, e.src, e.dst) for e in graph.edges)
    return Genotype.from_cells("distill", {"a": edges, "b": edges})


def test_sites_count_every_cell_of_a_shared_label():
    assert [(s.label, s.channels) for s in cell_sites(TwoLabels())] == [("a", 2), ("a", 2), ("b", 3)]


def test_profile_prices_each_op_per_edge():
    space = build_space("distill")
    costs = measure_ops(space, 3, 4, 4, n_params)
    for op in space.candidates:  # the fake time of a uniform cell, less the all-skip one, per edge
        assert costs[op] == pytest.approx(get_params(op, 3))
    assert costs["skip_connect"] == 0.0


def get_params(op: str, channels: int) -> int:
    return static_cost(op, channels, 4, 4)[1]


def test_table_sum_plus_fitted_base_predicts_every_genotype_exactly():
    net = TwoLabels()
    sites = cell_sites(net)
    table = profile_space(build_space("distill"), [2, 3], 4, 4, timer=n_params, rounds=2)
    price = table_price(table, "distill", "latency", 4, 4, device_name("cpu"), 1)
    x = torch.rand(1, 2, 4, 4)

    def measured(g: Genotype) -> float:
        return n_params(compile_model(net, g), x)

    ref = uniform("skip_connect")
    base = fit_base(measured(ref), ref, sites, price)
    fixed = sum(p.numel() for p in net.up.parameters()) + 2 * sum(p.numel() for p in net.a[0].post.parameters()) \
        + sum(p.numel() for p in net.b.post.parameters())
    assert base == fixed  # what no edge owns: the 1x1 conv between and the cells' output fusions
    rng = random.Random(0)
    space = build_space("distill")
    for _ in range(5):
        g = Genotype.from_cells("distill", {"a": space.random_edges(rng), "b": space.random_edges(rng)})
        assert base + cells_cost(g, sites, price) == pytest.approx(measured(g))


def test_table_round_trips_and_refuses_another_schema(tmp_path):
    key = CostKey("distill", "conv_3x3", 3, 40, 60, "cpu/X", 1)
    table = CostTable([OpCost(key, 1.5, 100, 84), OpCost(CostKey("distill", "skip_connect", 3, 40, 60, "cpu/X", 1),
                                                          None, 0, 0)])
    path = tmp_path / "t.json"
    table.save(path)
    again = CostTable.load(path)
    assert [(e.key, e.ms, e.flops, e.params) for e in again] == [(e.key, e.ms, e.flops, e.params) for e in table]
    path.write_text('{"schema": 99, "entries": []}')
    with pytest.raises(ConfigError, match="schema"):
        CostTable.load(path)
    assert len(CostTable.load(tmp_path / "missing.json")) == 0


def test_missing_latency_names_the_command_and_static_metrics_need_no_table():
    empty = CostTable()
    with pytest.raises(ConfigError, match="profile-ops distill --channels 6 --size 40x60"):
        table_price(empty, "distill", "latency", 40, 60, "cpu/X", 1)("conv_3x3", 6)
    flops = table_price(empty, "distill", "flops", 40, 60, "cpu/X", 1)("conv_3x3", 6)
    assert flops == 40 * 60 * 6 * (6 * 9 + 1)  # one multiply-add per tap, plus the bias
    assert table_price(empty, "distill", "params", 40, 60, "cpu/X", 1)("conv_1x1", 6) == 6 * 6 + 6


def test_profile_ops_cli_writes_the_table(tmp_path, capsys):
    path = tmp_path / "costs.json"
    rc = main(["profile-ops", "distill", "--channels", "2", "--size", "8x8", "--repeats", "1", "--rounds", "1",
               "--table", str(path)])
    assert rc == 0
    table = CostTable.load(path)
    assert {e.key.op for e in table} == set(build_space("distill").candidates)
    assert all(e.ms is not None and e.ms >= 0 for e in table)
    assert "resconv_3x3" in capsys.readouterr().out


def test_profile_ops_cli_refuses_other_devices(tmp_path, capsys):
    assert main(["profile-ops", "distill", "--device", "cuda", "--table", str(tmp_path / "t.json")]) == 2
