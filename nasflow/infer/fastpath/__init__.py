"""Inference fast path for compiled networks: fused cells, packed convolutions, an inference policy.

:func:`fast_model` returns an inference-only copy of a compiled network in which every plain
:class:`~nasflow.core.cell.Cell` is replaced by a :class:`FusedCell`: the same function (float64: equal
to 1e-10; float32: to rounding) computed by a short program read from the cell's graph and ops.

Where the time goes (2 CPU cores, AVX-512, 600x400): oneDNN's channels-last convolution costs
about ``C_in * ceil(C_out / 16) * taps`` per pixel (:func:`conv_cost`): output channels are padded
to a 16-float register, so a 3 -> 3 conv leaves 13 of 16 lanes idle, and a 1x1 conv costs little
more than reading its input. Hence, in order of what they paid (one thread, 3,438-parameter distill network):

* **oneDNN called directly on channels-last tensors** (:func:`conv2d`): ``F.conv2d`` on NCHW
  tensors is many times slower for these small convs, and with one thread sends 1x1 convs to a
  generic path.
* **Width packing** (:func:`pack_weight`): ``P`` neighbouring output pixels share one output of
  ``P * C_out`` channels (kernel ``k x (extent + P - 1)``, stride ``(1, P)``); in channels-last
  memory the packed output *is* the plain output, byte for byte; a few-channel conv runs up to
  twice as fast. The packing is chosen per conv by the cost model and per call by what divides
  the width.
* **Structural re-parameterisation**: residual ops ``conv(x) + x``, node residuals and identities
  fold into the centre tap of the conv reading the same tensor; activations and the sum of the
  output fusion run as oneDNN post-ops (conv + LeakyReLU in one pass; ``acc += conv(x)`` in place).
* **The output fusion** (1x1 conv over the concatenated output nodes) as one 1x1 partial per
  output block, accumulated as soon as the block exists: no ``torch.cat``.
* **Positive homogeneity**: ``act(c * x) == c * act(x)`` for (leaky) ReLU and ``c > 0``, so a skip
  edge into a residual node (``act(x + x)``) costs one in-place activation, ``c`` going into the
  readers' weights.
* **Merging** convs that read the same tensor (``merge``): equal larger kernels merge (saves a
  whole pass); 1x1 convs and identities stay apart by default (``"all"`` merges them too), because
  a node inside a block costs its readers (a channel slice of a channels-last tensor must be
  copied for a larger kernel; a 1x1 reader reads all the block's channels). Padding a dilated
  3x3 to a 5x5 to merge it with a 3x3 (``"pad"``) costs more than it saves.
* **Chain folding** (:func:`fold_chain`): a cell's 1x1 output fusion composed with the next
  cell's entry 1x1 convs, a conv stem with the first cell's (exact: no padding involved).
  :func:`fast_model` folds inside every ``nn.Sequential``; tasks call it for their own chains.

Anything a fused cell does not understand (pooling, separable convs, batch norm, strided edges) is
run as the original module inside the fused cell ("opaque" terms), and a cell whose activation or
output module is unknown is left as it is: never wrong, only less fast.

The inference policy (:class:`FastOptions`): ``torch.inference_mode``; channels-last (NCHW
measured slower for every conv here); intra-op ``threads`` (under contention from other
processes, two OpenMP threads can stall: one thread, or row bands on Python threads via
:func:`run_in_bands` where the receptive radius is known, are steadier); ``hold_heap`` (opt-in,
process-wide: glibc keeps freed memory, which removes the page faults of re-allocating feature
maps); and ``compile`` (opt-in ``torch.compile``: seconds for the first call, then slower than
this eager path on a CPU). The measured figures behind each choice: ``benchmarks/README.md``.
:class:`FusedCell`, :class:`FastConv` define ``halo()`` for :mod:`nasflow.infer.tiling`.
"""

from __future__ import annotations

from nasflow.infer.fastpath.chain import fold_chain
from nasflow.infer.fastpath.conv import FastConv, conv2d, conv2d_acc, conv2d_packed, conv_cost, pack_weight
from nasflow.infer.fastpath.fused_cell import FusedCell, fuse_cell
from nasflow.infer.fastpath.locality import cell_radius, op_radius, run_in_bands
from nasflow.infer.fastpath.module import FastModule, fast_model, prepare
from nasflow.infer.fastpath.options import FastOptions
from nasflow.infer.fastpath.runtime import hold_heap, inference_policy

# importable from here too, though not in __all__ (tasks, tests and benchmarks use them)
from nasflow.infer.fastpath.analysis import Unsupported  # noqa: F401
from nasflow.infer.fastpath.conv import LANES, pack_choices  # noqa: F401
from nasflow.infer.fastpath.options import CL  # noqa: F401
from nasflow.infer.fastpath.runtime import to_channels_last, to_contiguous  # noqa: F401

__all__ = [
    "FastOptions", "FastModule", "FusedCell", "FastConv", "fast_model", "prepare", "fuse_cell", "fold_chain",
    "conv2d", "conv2d_acc", "conv2d_packed", "pack_weight", "conv_cost", "inference_policy", "hold_heap",
    "op_radius", "cell_radius", "run_in_bands",
]
