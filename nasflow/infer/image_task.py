"""The opt-in protocol of tasks whose networks map images to images (what inference needs).

A task that implements :meth:`ImageToImage.predict` can be served by ``nasflow enhance``,
:func:`nasflow.load_model` and ``nasflow export``; the generic :class:`~nasflow.task.Task` knows
nothing of images. ``inference_network`` and ``halo`` are optional hooks: :func:`inference_network`
and :func:`halo` fall back to the compiled network itself and to its receptive-field bound.
Structural typing (a ``Protocol``), so a task opts in by defining ``predict``, with or without
naming this class among its bases.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from nasflow.errors import ConfigError


@runtime_checkable
class ImageToImage(Protocol):
    """A task that maps images to images.

    ``predict(model, images)``: the model's output image for an NCHW batch in [0, 1], clamped to
    [0, 1]; it is what ``nasflow enhance`` and :func:`nasflow.load_model` call, on whole images or
    on tiles. Optional: ``inference_network(model)``, a faster module with the same function (fused,
    re-parameterised) that ``predict`` then runs; ``halo(model)``, how far an output pixel sees
    into the input (an upper bound, for exact tiling) when the forward pass holds spatial operations
    that :func:`~nasflow.infer.tiling.receptive_halo` cannot read.
    """

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor: ...


def image_task(task: Any, where: str) -> ImageToImage:
    """``task`` if it maps images to images, else a :class:`ConfigError` naming ``where``."""
    if not isinstance(task, ImageToImage):
        raise ConfigError(f"{where}: task '{getattr(task, 'name', type(task).__name__)}' does not map images to "
                          "images (it has no predict); only image-to-image models can be enhanced or exported")
    return task


def inference_network(task: ImageToImage, model: nn.Module) -> nn.Module:
    """The network ``task.predict`` runs at inference: the task's hook, else ``model`` itself."""
    hook = getattr(task, "inference_network", None)
    return model if hook is None else hook(model)


def halo(task: ImageToImage, model: nn.Module) -> int:
    """The task's halo hook, else the receptive-field bound of every module it can read."""
    hook = getattr(task, "halo", None)
    if hook is not None:
        return int(hook(model))
    from nasflow.infer.tiling import receptive_halo

    return receptive_halo(model)
