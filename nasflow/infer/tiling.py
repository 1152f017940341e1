"""Tiled image-to-image inference whose output equals whole-image processing.

A network made of stride-1 "same" convolutions (and other local ops) computes each output pixel
from a window of radius ``halo`` around it. Processing an image in tiles that overlap by ``halo``
on every side and keeping only each tile's core therefore gives exactly the whole-image result
(up to float summation order), while memory stays bounded by the tile size, not the image size.
Borders are never padded by us: a tile that touches the image border sees the same zero padding
the whole image would.

A network whose forward pass starts with a step that reads a whole-image statistic (a global
exposure, say) is not tileable as a whole, but its rest may be: such a module offers
``split_global() -> (prelude, local)`` (see :func:`split_global`), and inference runs ``prelude``
on the whole image, then ``local`` in tiles.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from nasflow.core.cell import Cell
from nasflow.errors import NasflowError

DEFAULT_TILE = 512


class NotTileable(NasflowError):
    """The network's spatial extent cannot be bounded (strides, global pooling, unknown ops)."""


_ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.Hardtanh,
    nn.Softplus, nn.Dropout,
)


def _window_halo(module: nn.Module, kernel, dilation, stride, padding) -> int:
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    kernel, dilation, stride = pair(kernel), pair(dilation), pair(stride)
    if any(s != 1 for s in stride):
        raise NotTileable(f"{type(module).__name__} has stride {stride}: tiled inference needs stride 1")
    halos = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if isinstance(padding, str):
        if padding != "same":
            raise NotTileable(f"{type(module).__name__} with padding={padding!r} changes the image size")
    elif any(h != 2 * p for h, p in zip(halos, pair(padding))):
        raise NotTileable(f"{type(module).__name__} (kernel {kernel}, padding {padding}) changes the image size")
    return max((h + 1) // 2 for h in halos)


def receptive_halo(module: nn.Module) -> int:
    """An upper bound on how far (in pixels) an output pixel of ``module`` sees into its input.

    Modules may define ``halo() -> int`` themselves (non-conv spatial ops must); convolutions and
    pooling windows are read from their attributes; a :class:`Cell` takes the longest path through
    its graph; any other container is bounded by the sum over its children (true for any
    composition of them). Raises :class:`NotTileable` for strides or padding that change the size.
    """
    own = getattr(module, "halo", None)
    if callable(own):
        return int(own())
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return _window_halo(module, module.kernel_size, module.dilation, module.stride, module.padding)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        dilation = getattr(module, "dilation", 1)
        return _window_halo(module, module.kernel_size, dilation, stride, module.padding)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        raise NotTileable(f"{type(module).__name__} looks at the whole image: tiles would change the output")
    if isinstance(module, Cell):
        return cell_halo(module)
    if isinstance(module, _ELEMENTWISE) or not any(True for _ in module.children()):
        if isinstance(module, _ELEMENTWISE) or not any(True for _ in module.parameters(recurse=False)):
            return 0
        raise NotTileable(f"cannot bound the spatial extent of {type(module).__name__}; give it a halo() method")
    return sum(receptive_halo(child) for child in module.children())


def cell_halo(cell: Cell) -> int:
    """Longest path through the cell's graph, each kept edge weighted by its op's halo."""
    reach: dict[str, int] = {}
    for name in cell.graph.inputs:
        reach[name] = receptive_halo(cell.pre[name]) if name in cell.pre else 0
    for node in cell.graph.nodes:
        best = reach[node.residual] if node.residual is not None else 0
        for row in cell.graph.incoming(node.name):
            edge = cell.graph.edges[row]
            if edge.name in cell.edges:
                best = max(best, reach[edge.src] + receptive_halo(cell.edges[edge.name]))
        reach[node.name] = best
    out = max(reach[o] for o in cell.graph.output)
    return out + receptive_halo(cell.post) + (receptive_halo(cell.act) if cell.act is not None else 0)


def split_global(module: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module] | None:
    """``(prelude, local)`` with ``module(x) == local(prelude(x))``, if the module offers the split.

    ``prelude`` is the module's whole-image step (cheap: it runs once on the whole image, however
    large); ``local`` shares the module's weights and is tileable. None if the module has no such
    step (``module.split_global()`` absent or returning None).
    """
    own = getattr(module, "split_global", None)
    return own() if callable(own) else None


def halo_split(length: int, edges: Sequence[int], halo: int) -> list[tuple[slice, slice]]:
    """One axis cut at ``edges`` (``0 = e_0 < ... < e_n = length``): per piece, the span to read
    (the core plus ``halo`` either side, clipped at the border) and the core inside that span.

    The one halo splitter: tiles (:func:`tile_boxes`) cut both axes with it, the fast path's row
    bands (:func:`nasflow.infer.fastpath.run_in_bands`) the rows.
    """
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        lo, hi = max(a - halo, 0), min(b + halo, length)
        out.append((slice(lo, hi), slice(a - lo, b - lo)))
    return out


def tile_boxes(height: int, width: int, tile: int, halo: int) -> Iterator[tuple[slice, slice, slice, slice]]:
    """Per tile: (rows, cols) to read from the image and (rows, cols) of the core inside that crop.

    The core tiles partition the image; each read box adds ``halo`` pixels around its core,
    clipped at the image border (:func:`halo_split` on each axis).
    """
    if tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    rows = halo_split(height, [*range(0, height, tile), height], halo)
    cols = halo_split(width, [*range(0, width, tile), width], halo)
    for read_rows, core_rows in rows:
        for read_cols, core_cols in cols:
            yield read_rows, read_cols, core_rows, core_cols


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, tile: int, halo: int,
                out_device: torch.device | str = "cpu") -> torch.Tensor:
    """``fn(x)`` for an NCHW image ``x``, computed tile by tile (see the module docstring).

    ``fn`` must keep the spatial size. Each tile is moved to ``fn``'s device by ``fn`` itself;
    the assembled result lives on ``out_device``. An image no larger than one tile is processed
    whole.
    """
    if x.dim() != 4:
        raise ValueError(f"expected an NCHW tensor, got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return fn(x).to(out_device)
    out: torch.Tensor | None = None
    for rows, cols, core_rows, core_cols in tile_boxes(height, width, tile, halo):
        y = fn(x[..., rows, cols])
        if y.shape[-2:] != (rows.stop - rows.start, cols.stop - cols.start):
            raise NotTileable(f"the network changed the tile size {tuple(x[..., rows, cols].shape[-2:])} "
                              f"to {tuple(y.shape[-2:])}")
        if out is None:
            out = torch.empty((*y.shape[:-2], height, width), dtype=y.dtype, device=out_device)
        top, left = rows.start + core_rows.start, cols.start + core_cols.start
        out[..., top : rows.start + core_rows.stop, left : cols.start + core_cols.stop] = y[..., core_rows, core_cols]
    assert out is not None
    return out
