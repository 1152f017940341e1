"""The cost model of a cell space: a per-op table (latency, FLOPs, parameters) and the sums over it.

Why a table: cells of one space differ several-fold in time per image (a ``skip_connect`` edge is
free on the fast path, a 3x3 conv is not), and a search can only trade quality for speed if it can
price an op without running the network. One :class:`OpCost` holds what one candidate op costs on
``channels`` channels of a ``height x width`` image: the median latency measured on a device
(``nasflow.infer.profile`` fills it with the fast path's own kernels, in a fused cell), its FLOPs
(:func:`nasflow.core.flops.count_flops` convention) and its parameters. Entries are keyed by op,
shape, device, thread count and torch version, so a table measured elsewhere is never used here.

A network's cost is modelled as ``base + sum over cells, sum over edges of cost(op, channels)``
(:func:`cells_cost`): ``base`` is what no edge owns (stems, output fusions, activations, the
network's own arithmetic), measured once per network (:func:`fit_base`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from nasflow.atomic import write_text_atomic
from nasflow.core.cell import SuperCell, supercells
from nasflow.core.flops import count_flops
from nasflow.core.genotype import Genotype
from nasflow.core.ops import get_op
from nasflow.errors import ConfigError

SCHEMA_VERSION = 1
METRICS = ("latency", "flops", "params")


def device_name(device: str | torch.device = "cpu") -> str:
    """The device part of a cost key: ``cpu/<vector ISA>`` or ``cuda/<GPU name>`` (timings differ by both)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda/{torch.cuda.get_device_name(dev)}"
    return f"{dev.type}/{torch.backends.cpu.get_cpu_capability()}"


@dataclass(frozen=True)
class CostKey:
    """Where an op's cost holds: ``op`` on an edge of a ``space`` cell of ``channels`` channels, on a
    ``height x width`` image, on ``device`` with ``threads`` intra-op threads, under torch ``torch``."""

    space: str
    op: str
    channels: int
    height: int
    width: int
    device: str
    threads: int
    torch: str = torch.__version__

    def text(self) -> str:
        return f"{self.space}|{self.op}|C{self.channels}|{self.height}x{self.width}|{self.device}|t{self.threads}|torch{self.torch}"


@dataclass(frozen=True)
class OpCost:
    """One op's cost: median latency (ms per forward of a 1-image batch), FLOPs and parameters."""

    key: CostKey
    ms: float | None
    flops: int
    params: int

    def value(self, metric: str) -> float:
        if metric == "latency":
            if self.ms is None:
                raise ConfigError(f"no latency measured for {self.key.text()}")
            return float(self.ms)
        if metric == "flops":
            return float(self.flops)
        if metric == "params":
            return float(self.params)
        raise ConfigError(f"cost metric must be one of {METRICS}, got {metric!r}")


def static_cost(op: str, channels: int, height: int, width: int) -> tuple[int, int]:
    """FLOPs and parameters of ``op`` (stride 1) on ``channels`` channels of a ``height x width`` image."""
    module = get_op(op).build(channels)
    flops = count_flops(module, 1, channels, height, width)
    return flops, sum(p.numel() for p in module.parameters())


def default_table_path() -> Path:
    """``$NASFLOW_COST_TABLE``, else ``$XDG_CACHE_HOME/nasflow/op_costs.json`` (``~/.cache`` by default)."""
    if os.environ.get("NASFLOW_COST_TABLE"):
        return Path(os.environ["NASFLOW_COST_TABLE"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "nasflow" / "op_costs.json"


class CostTable:
    """Op costs keyed by :class:`CostKey`, stored as a small versioned JSON file."""

    def __init__(self, entries: Iterable[OpCost] = ()) -> None:
        self._entries: dict[CostKey, OpCost] = {}
        for e in entries:
            self.put(e)

    def put(self, entry: OpCost) -> None:
        self._entries[entry.key] = entry

    def get(self, key: CostKey) -> OpCost | None:
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(sorted(self._entries.values(), key=lambda e: e.key.text()))

    def to_json(self) -> str:
        rows = [{**asdict(e.key), "ms": e.ms, "flops": e.flops, "params": e.params} for e in self]
        return json.dumps({"schema": SCHEMA_VERSION, "entries": rows}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "cost table") -> "CostTable":
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            raise ConfigError(f"{where}: not a cost table of schema {SCHEMA_VERSION} (delete it to rebuild)")
        table = cls()
        for row in data["entries"]:
            key = CostKey(str(row["space"]), str(row["op"]), int(row["channels"]), int(row["height"]), int(row["width"]),
                          str(row["device"]), int(row["threads"]), str(row["torch"]))
            ms = None if row["ms"] is None else float(row["ms"])
            table.put(OpCost(key, ms, int(row["flops"]), int(row["params"])))
        return table

    @classmethod
    def load(cls, path: str | Path) -> "CostTable":
        """The table at ``path``; an empty one when the file does not exist yet."""
        path = Path(path)
        if not path.exists():
            return cls()
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self.to_json())


# -- what a network is made of ------------------------------------------------------------------------
@dataclass(frozen=True)
class CellSite:
    """One searched cell of a network: its label (the genotype's cells) and its channel count."""

    label: str
    channels: int


def cell_sites(model: nn.Module) -> list[CellSite]:
    """Every supercell of a supernet, in module order (cells sharing a label each count once)."""
    return [_site(cell) for cell in supercells(model)]


def _site(cell: SuperCell) -> CellSite:
    channels = {m.channels for m in cell.edges.values()}
    if len(channels) != 1:
        raise ConfigError(f"cell '{cell.nas_label}' mixes channel counts {sorted(channels)}: no single cost key")
    return CellSite(cell.nas_label, channels.pop())


OpPrice = Callable[[str, int], float]
"""``(op, channels) -> cost`` of one edge running ``op``."""


def cells_cost(genotype: Genotype, sites: Iterable[CellSite], price: OpPrice) -> float:
    """Sum over the network's searched cells and their kept edges of ``price(op, channels)``."""
    return sum(price(e.op, site.channels) for site in sites for e in genotype.edges(site.label))


def fit_base(measured: float, genotype: Genotype, sites: Iterable[CellSite], price: OpPrice) -> float:
    """The network's fixed part: ``measured`` (its time for ``genotype``) less what its edges cost."""
    return measured - cells_cost(genotype, sites, price)


def table_price(table: CostTable, space: str, metric: str, height: int, width: int, device: str,
                threads: int) -> OpPrice:
    """:data:`OpPrice` read from ``table``; a missing entry is an error that says how to measure it."""

    def price(op: str, channels: int) -> float:
        key = CostKey(space, op, channels, height, width, device, threads)
        entry = table.get(key)
        if entry is None:
            if metric != "latency":
                flops, params = static_cost(op, channels, height, width)
                return float(flops if metric == "flops" else params)
            raise ConfigError(f"the cost table has no latency for {key.text()}; measure it with "
                              f"`nasflow profile-ops {space} --channels {channels} --size {height}x{width} "
                              f"--threads {threads}`")
        return entry.value(metric)

    return price


def op_prices(price: OpPrice, ops: Iterable[str], channels: int) -> dict[str, float]:
    """``{op: price(op, channels)}``; the zero op (``none``) costs nothing."""
    return {op: 0.0 if get_op(op).is_zero else price(op, channels) for op in ops}

