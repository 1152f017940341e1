"""Data-parallel search under ``torchrun``: every rank ends with bitwise-identical alphas and weights.

Usage (one process per GPU, or per CPU slot with gloo)::

    torchrun --nproc_per_node=2 -m nasflow run tasks/demo.yaml

Each rank builds the same task and supernet, :func:`broadcast_module_` copies rank 0's
parameters and buffers to all ranks, :func:`shard` gives each rank a disjoint, equally long
slice of the search batches, and the strategies average the exact gradients they apply
(``strategy.sync``, :func:`average_`) before clipping and stepping. Identical starting
state + identical averaged gradients + identical (deterministic) optimizer math = identical
state on every rank after every step, with no parameter broadcast needed along the way.

Why not ``torch.nn.parallel.DistributedDataParallel``: nasflow computes its gradients with
``torch.autograd.grad`` (hypergradients: virtual steps, finite differences, double backprop),
not with ``loss.backward()``. DDP's reducer hooks only the ``.grad`` accumulation of a
``backward()`` call, so it would never see (and never average) these gradients, and its
forward hooks would fire on every one of the several forward passes of a hypergradient.
Averaging explicitly the gradients each strategy actually assigns is the correct
data-parallel equivalent.

What is averaged is the *per-rank* gradient of the *per-rank* batch: for the weight step and
the ``first_order`` hypergradient (gradients of a mean loss over equally sized shards) this is
the gradient of the union batch; for the second-order hypergradients (``finite_difference``,
``exact_hvp``) each rank unrolls its virtual step on its own shard, so the result is the
average of per-shard hypergradients (the usual data-parallel DARTS), not the hypergradient of
the union batch.

Buffers (BatchNorm running statistics) are not gradients: each rank updates them from its own
shard. Call :func:`average_buffers_` before anything reads them (e.g. before an evaluation in
``after_epoch``, and before rank 0 saves the supernet) so that they agree too.

All collectives are no-ops when torch.distributed is not initialised (a plain ``python``
run, or ``torchrun --nproc_per_node=1``): the single-process path runs no extra tensor ops.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from nasflow.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job. ``enabled`` is False for a single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def pick_device(name: str | torch.device, key: str = "device") -> torch.device:
    """The one device picker: ``auto`` -> CUDA when available, else the CPU; ``cpu``; ``cuda`` or
    ``cuda:N``. Anything else, or CUDA on a machine without it, is a ConfigError naming ``key``."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and name != "cuda" and not name.startswith("cuda:"):
        raise ConfigError(f"{key}: expected auto, cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {name!r} was asked for but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def init_distributed(device_pref: str = "auto") -> DistContext:
    """Join the ``torchrun`` job if there is one (env ``WORLD_SIZE`` > 1), else a disabled context.

    ``device_pref`` is the run config's ``device`` (``auto`` | ``cpu`` | ``cuda``): CUDA runs use
    NCCL on ``cuda:LOCAL_RANK``, CPU runs use gloo. Without torchrun (or with one process) the
    context is disabled and its device is what :func:`pick_device` chooses.
    """
    if device_pref not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device: expected auto, cpu or cuda, got {device_pref!r}")
    want_cuda = pick_device(device_pref).type == "cuda"
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=pick_device(device_pref))
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if want_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device, enabled=True)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """Rank 0 (or a single-process run): the one process that writes files and logs."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (safe to call when none was created)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- collectives ----------------------------------------------------------------------------------


def _flat_collective(tensors: list[torch.Tensor], op: Callable[[torch.Tensor], None]) -> None:
    """Run ``op`` on one flat buffer per (device, dtype), in list order, and write the results back.

    Results go back into each tensor in place, or, for a tensor that cannot be written in place
    (an expanded gradient from ``autograd.grad``), into the list in its stead.
    """
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    for idx in buckets.values():
        members = [tensors[i].detach() for i in idx]
        flat = _flatten_dense_tensors(members)  # a fresh contiguous buffer (torch.cat of flattened views)
        op(flat)
        for i, t, new in zip(idx, members, _unflatten_dense_tensors(flat, members)):
            if torch._debug_has_internal_overlap(t) == 0:  # 0: no overlap, safe to write
                with torch.no_grad():
                    t.copy_(new)
            else:
                tensors[i] = new.clone()


def average_(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Average ``tensors`` over all ranks, in place: one flattened ``all_reduce`` (SUM) per dtype and
    device, then division by the world size. Returns ``tensors`` (the same list).

    Every rank must pass tensors of the same shapes, dtypes and order. The reduced sum is the same
    bits on every rank (gloo and NCCL all-gather the reduced chunks) and the division is local and
    deterministic, so the averages are bitwise equal across ranks. A no-op outside a distributed
    run (no tensor op at all).
    """
    if not tensors or not is_distributed():
        return tensors
    world = dist.get_world_size()

    def op(flat: torch.Tensor) -> None:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)

    _flat_collective(tensors, op)
    return tensors


def broadcast_(tensors: list[torch.Tensor], src: int = 0) -> list[torch.Tensor]:
    """Overwrite ``tensors`` with rank ``src``'s values (flattened, one broadcast per dtype/device)."""
    if not tensors or not is_distributed():
        return tensors
    _flat_collective(tensors, lambda flat: dist.broadcast(flat, src=src))
    return tensors


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of rank ``src``'s ``module`` to all ranks (call once, before
    the strategy is built, so that every rank starts from the same supernet)."""
    tensors = [p.data for p in module.parameters()] + [b.data for b in module.buffers()]
    broadcast_(tensors, src)


def average_buffers_(module: nn.Module, src: int = 0) -> None:
    """Make the buffers agree: floating-point ones (BatchNorm running statistics) are averaged,
    the others (``num_batches_tracked``) are taken from rank ``src``."""
    buffers = [b.data for b in module.buffers()]
    average_([b for b in buffers if b.is_floating_point()])
    broadcast_([b for b in buffers if not b.is_floating_point()], src)


def shard(batches: Iterable[T], ctx: DistContext) -> list[T]:
    """This rank's share of ``batches``: ``batches[rank::world]`` cut to ``len(batches) // world``.

    Every rank gets the same number of batches (so every rank runs the same number of steps and
    collectives never wait for a rank that has finished); up to ``world - 1`` batches at the end
    are dropped. Every rank must see the same ``batches`` (same seed, same shuffle). A disabled
    context returns all batches.
    """
    items = list(batches)
    if not ctx.enabled or ctx.world_size <= 1:
        return items
    n = len(items) // ctx.world_size
    if items and n == 0:
        raise ConfigError(f"{len(items)} batch(es) cannot be shared among {ctx.world_size} ranks; "
                          "use a smaller batch size or fewer processes")
    return items[ctx.rank :: ctx.world_size][:n]



def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (e.g. the run folder it chose)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_digests(tensors: list[torch.Tensor]) -> list[str]:
    """SHA-256 of the tensors' bytes on every rank, gathered everywhere: proof that ranks agree."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()
    if not is_distributed():
        return [digest]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, digest)
    return out
