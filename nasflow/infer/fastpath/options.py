"""What the fast path does (:class:`FastOptions`) and the memory format it runs in (``CL``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

CL = torch.channels_last


@dataclass(frozen=True)
class FastOptions:
    """What the fast path does; the defaults are the measured winners on a 2-core CPU."""

    channels_last: bool = True  # run in channels-last memory format (inputs converted at entry)
    # which convs reading the same tensor become one conv: "none"; "same": equal larger kernels;
    # "all": also 1x1 convs and identity-only nodes (centre taps); "pad": "all", kernels padded to one
    merge: str = "same"
    fold_identity: bool = True  # residual / identity terms into conv centre taps
    fusion: str = "partial"  # output 1x1 conv as per-block partial sums ("partial") or over a cat ("cat")
    fold_chains: bool = True  # compose 1x1 maps across cells in nn.Sequential chains
    inference_mode: bool = True
    threads: int | None = None  # intra-op threads during a forward (None: leave as is)
    contiguous_outputs: bool = True  # hand back tensors in the default memory format
    hold_heap: bool = False  # glibc: keep freed memory in the heap (process-wide: opt-in, see hold_heap())
    compile: bool = False  # torch.compile the fused network (opt-in: slow first call)

    def __post_init__(self) -> None:
        if self.merge not in ("none", "same", "all", "pad"):
            raise ValueError(f"merge must be 'none', 'same', 'all' or 'pad', got {self.merge!r}")
        if self.fusion not in ("partial", "cat"):
            raise ValueError(f"fusion must be 'partial' or 'cat', got {self.fusion!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be positive, got {self.threads}")
