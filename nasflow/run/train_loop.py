"""The train loop: the compiled network trained phase by phase (``Task.train_phases``).

Not checkpointed: a run that stops here keeps its search result (genotype.json, checkpoints) and
trains again from it.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from nasflow.errors import TrainingDiverged
from nasflow.run.context import _Progress
from nasflow.run.layout import batch_to, resolve_memory_format
from nasflow.schema import RunConfig
from nasflow.task import Task

log = logging.getLogger("nasflow")


def train(cfg: RunConfig, task: Task, model: nn.Module, progress: _Progress) -> nn.Module:
    """Train the compiled network, phase by phase (``Task.train_phases``), each for ``train.epochs``."""
    if cfg.train.epochs == 0:
        return model
    layout = resolve_memory_format(cfg.memory_format, torch.device(task.device))
    model.to(memory_format=layout)  # in place: the phases' parameter lists stay valid
    data_epoch = 0  # training epochs counted over all phases: each sees fresh batches
    for phase in task.train_phases(model):
        if not phase.parameters:
            continue
        opt = torch.optim.Adam(phase.parameters, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs)
        for epoch in progress(range(cfg.train.epochs), f"train {phase.name}"):
            model.train()
            total, n = 0.0, 0
            for b, batch in enumerate(task.train_batches(data_epoch)):
                opt.zero_grad(set_to_none=True)
                terms = phase.loss(model, batch_to(batch, layout))
                loss = terms["loss"]
                value = float(loss.detach())
                if not math.isfinite(value):
                    shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                    raise TrainingDiverged(
                        f"training diverged in phase '{phase.name}', epoch {epoch + 1}, batch {b + 1}: the loss "
                        f"became NaN or infinite ({shown}); the search result (genotype.json, checkpoints) is kept; "
                        f"hint: lower the learning rate (train.lr={cfg.train.lr:g}) and train again")
                loss.backward()
                opt.step()
                total, n = total + value, n + 1
            sched.step()
            data_epoch += 1
            log.info("train %s epoch %d/%d loss=%.4g", phase.name, epoch + 1, cfg.train.epochs, total / max(1, n))
    return model
