"""Demo task: recover a planted architecture.

A random genotype of a search space is compiled with random weights as a *teacher*; inputs
are Gaussian images and targets are the teacher's outputs (plus a little noise). The search
should find the teacher's ops. Needs no data files; it proves the engine end to end and is
the smallest honest check that a search finds something.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nasflow.core.cell import FanIn
from nasflow.core.compile import compile_cell
from nasflow.core.genotype import Genotype
from nasflow.core.space import CellSpace, build_space
from nasflow.core.supernet import Supernet
from nasflow.task import Task


@dataclass
class PlantedOptions:
    space: str = "distill"
    channels: int = field(default=4, metadata={"min": 1})
    size: int = field(default=16, metadata={"min": 4})
    train_samples: int = field(default=256, metadata={"min": 1})
    val_samples: int = field(default=128, metadata={"min": 1})
    batch_size: int = field(default=32, metadata={"min": 1})
    noise_std: float = field(default=0.01, metadata={"min": 0.0})
    teacher_seed: int = 1234
    teacher_scale: float = field(default=2.0, metadata={"min": 0.0})  # larger weights: ops easier to tell apart
    candidates: list[str] | None = None  # the space's candidate ops (None: the space's defaults)


class PlantedNet(Supernet):
    """One searchable cell, label ``cell``."""

    def __init__(self, space: CellSpace, channels: int) -> None:
        super().__init__()
        self.cell = space.supercell(self.arch, "cell", channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_inputs = len(self.cell.graph.inputs)
        return self.cell(*([x] * n_inputs))


class PlantedTask(Task):
    """Regression onto a randomly drawn, compiled teacher cell (demo, no data needed)."""

    name = "planted"
    Options = PlantedOptions

    def __init__(self, options: PlantedOptions, *, seed: int, device: torch.device) -> None:
        super().__init__(options, seed=seed, device=device)
        self.space = build_space(options.space, {"candidates": options.candidates} if options.candidates else None)
        rng = random.Random(options.teacher_seed)
        edges = self.space.random_edges(rng)
        self.teacher_genotype = Genotype.from_cells(self.space.name, {"cell": edges}, {"planted": True})
        gen = torch.Generator().manual_seed(options.teacher_seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.teacher_seed)
            self.teacher = FanIn(compile_cell(self.space, self.teacher_genotype, "cell", options.channels)).eval()
            with torch.no_grad():
                for p in self.teacher.parameters():
                    p.mul_(options.teacher_scale)
        self.train_set = self._make(options.train_samples, gen)
        self.val_set = self._make(options.val_samples, gen)

    @torch.no_grad()
    def _make(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.options
        x = torch.randn(n, o.channels, o.size, o.size, generator=gen)
        y = self.teacher(x)
        y = y + o.noise_std * torch.randn(y.shape, generator=gen)
        return x.to(self.device), y.to(self.device)

    def _shuffle(self, stage: str, epoch: int) -> torch.Generator:
        """The shuffling generator of one epoch: a function of (seed, stage, epoch) only, so batches
        are too (no state to save, nothing drawn from the global RNG)."""
        digest = hashlib.blake2b(repr((self.seed, stage, int(epoch))).encode(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))

    def _batches(self, data: tuple[torch.Tensor, torch.Tensor], shuffle: torch.Generator) -> list:
        x, y = data
        order = torch.randperm(len(x), generator=shuffle)
        bs = self.options.batch_size
        return [(x[order[i : i + bs]], y[order[i : i + bs]]) for i in range(0, len(x), bs)]

    def build_supernet(self) -> Supernet:
        return PlantedNet(self.space, self.options.channels)

    def search_batches(self, epoch: int) -> tuple[Iterable, Iterable]:
        # DARTS splits the training data in halves: weights on one, alphas on the other.
        x, y = self.train_set
        half = len(x) // 2 or 1
        shuffle = self._shuffle("search", epoch)
        return self._batches((x[:half], y[:half]), shuffle), self._batches((x[half:], y[half:]), shuffle)

    def train_batches(self, epoch: int) -> Iterable:
        return self._batches(self.train_set, self._shuffle("train", epoch))

    def loss(self, model: nn.Module, batch) -> Mapping[str, torch.Tensor]:
        x, y = batch
        return {"loss": F.mse_loss(model(x), y)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, genotype: Genotype) -> dict[str, float]:
        model.eval()
        x, y = self.val_set
        mse = float(F.mse_loss(model(x), y))
        zero_mse = float(y.pow(2).mean())  # predicting zeros: the scale of the targets
        found = set(genotype.edges("cell"))
        planted = set(self.teacher_genotype.edges("cell"))
        return {
            "val_mse": mse,
            "val_mse_zero_baseline": zero_mse,
            "edges_recovered": len(found & planted) / len(planted),
        }
