"""Memory layout of search and training tensors: channels-last on CPUs.

oneDNN's convolutions on a CPU run several times faster forward and backward on channels-last
(NHWC) tensors than on NCHW ones when a network has a handful of channels (figures:
``benchmarks/README.md``, ``benchmarks/search_speed.py``). Converting
the model's weights (``model.to(memory_format=...)``, in place) and each batch once is enough: every op downstream keeps the layout.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

def resolve_memory_format(name: str, device: torch.device) -> torch.memory_format:
    """``auto``: channels-last on a CPU, contiguous (NCHW) elsewhere."""
    if name == "auto":
        return torch.channels_last if device.type == "cpu" else torch.contiguous_format
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor in it (tuples, named tuples, lists and dicts walked)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(x, fn) for x in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(x, fn) for x in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def batch_to(batch: Any, fmt: torch.memory_format) -> Any:
    """``batch`` with every 4-d tensor in ``fmt``."""
    return map_tensors(batch, lambda t: t.contiguous(memory_format=fmt) if t.dim() == 4 else t)
