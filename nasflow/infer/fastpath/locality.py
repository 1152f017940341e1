"""Locality: receptive radii of ops and cells, and band-parallel evaluation (:func:`run_in_bands`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from nasflow.core.cell import Cell
from nasflow.infer.fastpath.fused_cell import FusedCell


def op_radius(module: nn.Module) -> int | None:
    """How far an output pixel of ``module`` sees (:func:`nasflow.infer.tiling.receptive_halo`); None if unbounded."""
    from nasflow.infer.tiling import NotTileable, receptive_halo

    try:
        return receptive_halo(module)
    except NotTileable:
        return None


def cell_radius(cell: nn.Module) -> int | None:
    """Receptive radius of a (fused) cell: the longest path through its graph; None if unbounded."""
    from nasflow.infer.tiling import NotTileable, cell_halo

    source = cell._source if isinstance(cell, FusedCell) else cell
    if not isinstance(source, Cell):
        return None
    try:
        return cell_halo(source)
    except NotTileable:
        return None


def run_in_bands(
    fn, x: torch.Tensor, halo: int, bands: int, pool: ThreadPoolExecutor
) -> torch.Tensor:
    """``fn(x)`` for a local, size-preserving ``fn`` of receptive radius ``halo``, in row bands.

    Each band is computed on its rows plus ``halo`` rows either side (cut at the image border),
    on its own Python thread with one intra-op thread; the rows within ``halo`` of an artificial
    border are discarded, so the result equals ``fn(x)`` (the same arithmetic on every pixel).
    Robust where other processes share the cores: no thread waits for another between ops.
    """
    from nasflow.infer.tiling import halo_split

    h = x.shape[-2]
    parts = halo_split(h, [round(i * h / bands) for i in range(bands + 1)], halo)

    def one(part: tuple[slice, slice]) -> torch.Tensor:
        rows, core = part
        torch.set_num_threads(1)  # this worker's own intra-op setting (per thread under OpenMP)
        with torch.inference_mode():
            return fn(x[:, :, rows])[:, :, core]

    with torch.inference_mode():
        return torch.cat(list(pool.map(one, parts)), dim=2)
