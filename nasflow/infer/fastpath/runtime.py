"""The inference policy at run time: threads, inference mode, glibc heap, tensor memory formats."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from nasflow.infer.fastpath.options import CL, FastOptions
from nasflow.run.layout import map_tensors


_HEAP_HELD = False


def hold_heap() -> bool:
    """Keep freed memory in the process heap instead of returning it to the OS (glibc only).

    A forward pass allocates and frees feature maps of megabytes; by default glibc serves those
    with fresh ``mmap`` pages or trims the heap after them, so every pass pays thousands of page
    faults (figures: ``benchmarks/README.md``).
    ``mallopt(M_MMAP_THRESHOLD, 1 GiB)`` and ``mallopt(M_TRIM_THRESHOLD, 2 GiB)`` keep the memory
    of the largest pass mapped instead. Process-wide and permanent (a preloaded jemalloc or
    tcmalloc does the same job); returns whether it took effect.
    """
    global _HEAP_HELD
    if _HEAP_HELD:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    _HEAP_HELD = bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))
    return _HEAP_HELD


_THREAD_LOCK = threading.Lock()


@contextmanager
def inference_policy(options: FastOptions) -> Iterator[None]:
    """``torch.inference_mode`` and the thread count of ``options`` (restored afterwards)."""
    with torch.inference_mode(options.inference_mode):
        if options.threads is None:
            yield
            return
        with _THREAD_LOCK:
            before = torch.get_num_threads()
            torch.set_num_threads(options.threads)
            try:
                yield
            finally:
                torch.set_num_threads(before)


def to_channels_last(obj: Any) -> Any:
    return map_tensors(obj, lambda t: t.contiguous(memory_format=CL) if t.dim() == 4 else t)


def to_contiguous(obj: Any) -> Any:
    return map_tensors(obj, lambda t: t.contiguous())
