"""Memory layout of search and training tensors: channels-last on CPUs.

oneDNN's convolutions on a CPU run 2-5x faster forward and backward on channels-last (NHWC)
tensors than on NCHW ones when a network has a handful of channels (measured on the RUAS
supernet's 3- and 6-channel 5x5 convolutions, see ``benchmarks/search_speed.py``). Converting
the model's weights and each batch once is enough: every op downstream keeps the layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def resolve_memory_format(name: str, device: torch.device) -> torch.memory_format:
    """``auto``: channels-last on a CPU, contiguous (NCHW) elsewhere."""
    if name == "auto":
        return torch.channels_last if device.type == "cpu" else torch.contiguous_format
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def model_to(model: nn.Module, fmt: torch.memory_format) -> nn.Module:
    """Convert ``model``'s 4-d parameters and buffers in place (parameter objects are kept)."""
    return model.to(memory_format=fmt)


def batch_to(batch: Any, fmt: torch.memory_format) -> Any:
    """``batch`` with every 4-d tensor in ``fmt`` (tuples, lists and dicts are walked)."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=fmt) if batch.dim() == 4 else batch
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(batch_to(x, fmt) for x in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(batch_to(x, fmt) for x in batch)
    if isinstance(batch, dict):
        return {k: batch_to(v, fmt) for k, v in batch.items()}
    return batch
