"""The run configuration schema (see ``tasks/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SGDConfig:
    lr: float = field(default=0.025, metadata={"min": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=3e-4, metadata={"min": 0.0})
    lr_min: float = field(default=0.0, metadata={"min": 0.0})  # cosine schedule floor


@dataclass
class AdamConfig:
    lr: float = field(default=3e-4, metadata={"min": 0.0})
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = field(default=1e-3, metadata={"min": 0.0})


@dataclass
class GroupConfig:
    """Per-group overrides of the search defaults (unset: inherit)."""

    every: int | None = field(default=None, metadata={"min": 1})
    warmup: int | None = field(default=None, metadata={"min": 0})
    hypergradient: str | None = None
    weight_optimizer: SGDConfig | None = None
    arch_optimizer: AdamConfig | None = None


@dataclass
class CostConfig:
    """A price on the architecture, added to every group's arch objective (see nasflow.search.cost).

    Random search adds the same term to each sample's score instead (it has no arch objective)."""

    metric: str = field(default="latency", metadata={"choices": ("latency", "flops", "params")})
    weight: float = field(default=0.0, metadata={"min": 0.0})  # penalty on the normalised expected cost (0: off); with target_ms: the multiplier's step
    target_ms: float | None = field(default=None, metadata={"min": 0.0})  # latency: keep the cells' expected ms under this (Lagrange multiplier; not for random search)
    size: tuple[int, int] = (400, 600)  # reference image height, width at which ops are priced
    threads: int = field(default=1, metadata={"min": 1})  # latency: the table's intra-op thread count
    table: str | None = None  # latency: cost table file (None: $NASFLOW_COST_TABLE or ~/.cache/nasflow/op_costs.json)


@dataclass
class SearchConfig:
    strategy: str = "darts"
    epochs: int = field(default=10, metadata={"min": 0})
    hypergradient: str = "first_order"  # first_order | finite_difference | exact_hvp
    derive_rule: str | None = None  # None: the space's own rule
    weight_optimizer: SGDConfig = field(default_factory=SGDConfig)
    arch_optimizer: AdamConfig = field(default_factory=AdamConfig)
    grad_clip: float = field(default=5.0, metadata={"min": 0.0})
    every: int = field(default=1, metadata={"min": 1})  # alphas updated every n steps
    warmup: int = field(default=0, metadata={"min": 0})  # steps of weight training before alpha updates
    groups: dict[str, GroupConfig] = field(default_factory=dict)  # keyed by the task's group names
    strategy_options: dict[str, Any] = field(default_factory=dict)  # validated by the strategy
    cost: CostConfig = field(default_factory=CostConfig)


@dataclass
class TrainConfig:
    epochs: int = field(default=10, metadata={"min": 0})
    lr: float = field(default=1e-3, metadata={"min": 0.0})
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})


@dataclass
class CheckpointConfig:
    every_steps: int = field(default=0, metadata={"min": 0})  # 0: at epoch ends only


@dataclass
class RunConfig:
    task: str
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms (slower); same seed -> same run on one machine
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    # search and training tensors: auto = channels_last on a CPU (faster small convolutions), else contiguous
    memory_format: str = field(default="auto", metadata={"choices": ("auto", "channels_last", "contiguous")})
    tensorboard: bool = True
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    task_options: dict[str, Any] = field(default_factory=dict)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
