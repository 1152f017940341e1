"""A strategy that records the runner's lifecycle calls (loaded by a test as ``module:attr``)."""

from __future__ import annotations

from nasflow.strategies.darts import DartsStrategy

CALLS: list[tuple[str, int]] = []


class RecordingStrategy(DartsStrategy):
    def before_epoch(self, epoch: int) -> None:
        CALLS.append(("before_epoch", epoch))

    def after_epoch(self, epoch: int) -> None:
        CALLS.append(("after_epoch", epoch))

    def before_step(self, step: int) -> None:
        CALLS.append(("before_step", step))

    def after_step(self, step: int, logs: dict[str, float]) -> None:
        assert "train/loss" in logs
        CALLS.append(("after_step", step))
