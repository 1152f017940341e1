"""Apply a trained image-to-image model to arrays: ``nasflow.load_model(name).enhance(array)``.

Images are processed in tiles whose overlap is the network's receptive-field halo, so the
result equals whole-image processing while memory stays bounded by the tile size.

On a GPU the network can run in half precision (``precision="fp16"`` or ``"bf16"``; float32 is
the default and the exact one) and is replayed from CUDA graphs (:mod:`nasflow.infer.cudagraph`): a
searched enhancement network is a few thousand parameters, so its GPU time is kernel launches.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from nasflow.errors import ConfigError
from nasflow.search.distributed import pick_device
from nasflow.infer.image_task import halo as halo_of, image_task, inference_network as inference_network_of
from nasflow.infer.models import LoadedModel, load_network
from nasflow.infer.tiling import DEFAULT_TILE, NotTileable, split_global, tiled_apply

DEFAULT_CUDA_TILE = 2048  # a 1920x1080 frame in one piece; GPU memory is not the CPU's cache
# With the default tile, images up to this many pixels run in one piece: faster than tiles, and the
# peak memory stays bounded (figures: benchmarks/README.md).
WHOLE_PIXELS = 1 << 20
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MAX_EXPOSURE_BIAS = 8.0  # stops either way: 256x, beyond any photo's dynamic range


def pick_precision(name: str, device: torch.device) -> torch.dtype:
    """fp32 anywhere; fp16/bf16 on CUDA only (on a CPU they are no faster than the float32 fast path,
    and less exact; figures: ``benchmarks/README.md``)."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name != "fp32" and device.type != "cuda":
        raise ConfigError(f"--precision {name} needs a CUDA device: on a {device.type} it is no faster than the "
                          f"float32 fast path, and less exact (use --precision fp32 or --device cuda)")
    return PRECISIONS[name]


class Enhancer:
    """A loaded model ready to enhance images (numpy arrays or NCHW tensors).

    ``tile``: None runs images up to one megapixel whole and larger ones in 512-px tiles on a CPU
    (peak memory flat in image size) and 2048-px tiles on a GPU. ``precision``:
    fp32, or fp16/bf16 on CUDA. ``cuda_graphs``: replay each input shape from a CUDA graph
    (default: on for CUDA devices; ignored on a CPU). ``compile``: ``torch.compile`` the forward
    instead (opt-in: each new image size compiles for seconds; faster on a GPU, figures in
    ``benchmarks/README.md``). ``exposure_bias``: an exposure compensation in stops (EV), as photo
    tools have, for models whose whole-image first step takes one (the shipped RUAS models): +1
    doubles the gain that step applies, -1 halves it; each ``enhance*`` call may override it.
    """

    def __init__(self, loaded: LoadedModel, device: torch.device, tile: int | None = None, *,
                 precision: str = "fp32", cuda_graphs: bool | None = None, compile: bool = False,
                 exposure_bias: float = 0.0) -> None:
        self.auto_tile = tile is None  # small images whole (WHOLE_PIXELS), large ones in tiles
        tile = tile if tile is not None else (DEFAULT_CUDA_TILE if device.type == "cuda" else DEFAULT_TILE)
        if tile < 16:
            raise ConfigError(f"tile must be at least 16 pixels, got {tile}")
        self.dtype = pick_precision(precision, device)
        self.precision = precision
        self.loaded = loaded
        self.task = image_task(loaded.task, str(loaded.source))
        self.device = device
        self.tile = tile
        # torch.compile fuses on its own: it gets the plain module (faster than compiling the fast path,
        # benchmarks/README.md); otherwise the task's fast inference network
        base = loaded.network if compile else inference_network_of(self.task, loaded.network)
        self.network: nn.Module = base.to(device, self.dtype).eval()
        # a whole-image first step (split_global) runs once on the whole image, the rest in tiles
        self._prelude: Callable[..., torch.Tensor] | None = None
        self.halo: int | None = None  # None: whole images only
        local = loaded.network
        plain, fast = split_global(loaded.network), split_global(self.network)
        if plain is not None and fast is not None:
            local = plain[1]
            self._prelude, self.network = fast
        try:
            self.halo = halo_of(self.task, local)
        except NotTileable:
            pass
        self.exposure_bias = self._checked_bias(exposure_bias)
        use_graphs = device.type == "cuda" if cuda_graphs is None else cuda_graphs and device.type == "cuda"
        self._forward = self._run_network
        if compile:  # its own kernels fused by Inductor; the first call of each size compiles (seconds)
            self._forward = torch.compile(self._run_network, dynamic=False)
        elif use_graphs:
            from nasflow.infer.cudagraph import GraphedCall

            self._forward = GraphedCall(self._run_network)

    @property
    def exposure_control(self) -> bool:
        """Whether this model takes an exposure bias (its whole-image first step accepts one)."""
        return bool(getattr(self._prelude, "accepts_exposure_bias", False))

    def _checked_bias(self, bias: float | None) -> float:
        bias = float(self.exposure_bias if bias is None else bias)
        if not math.isfinite(bias) or abs(bias) > MAX_EXPOSURE_BIAS:
            raise ConfigError(f"the exposure bias must be a number of stops within +-{MAX_EXPOSURE_BIAS:g}, got {bias}")
        if bias and not self.exposure_control:
            raise ConfigError(f"model {self.name} has no exposure control: its network has no whole-image exposure "
                              f"step to bias (leave the exposure bias at 0)")
        return bias

    @property
    def name(self) -> str:
        return str(self.loaded.meta.get("name") or Path(self.loaded.source).stem)

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.loaded.meta)

    def _run_network(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.predict(self.network, x)

    @torch.inference_mode()
    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).to(self.dtype)
        if self.device.type != "cuda":
            return self._forward(x).float()
        # fp32 means float32: cuDNN would otherwise run convolutions in TF32 on Ampere and later GPUs
        # (10-bit mantissa: visibly off the CPU result). The flags are process-wide for the call.
        cudnn = torch.backends.cudnn
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=self.dtype != torch.float32):
            return self._forward(x).float()

    @torch.inference_mode()
    def enhance_tensor(self, x: torch.Tensor, *, tile: int | None = None,
                       exposure_bias: float | None = None) -> torch.Tensor:
        """NCHW float in [0, 1] -> enhanced NCHW float32 on the CPU (tiled when larger than ``tile``).
        ``exposure_bias``: stops (None: the enhancer's own, see :class:`Enhancer`)."""
        if x.dim() != 4:
            raise ValueError(f"expected an NCHW tensor, got shape {tuple(x.shape)}")
        bias = self._checked_bias(exposure_bias)
        if tile is None and self.auto_tile and x.shape[-2] * x.shape[-1] <= WHOLE_PIXELS:
            tile = max(x.shape[-2:])
        tile = tile or self.tile
        if self._prelude is not None:
            x = self._prelude(x.float(), exposure_bias=bias) if bias else self._prelude(x.float())
        if self.halo is None:
            return self._predict(x).cpu()
        return tiled_apply(self._predict, x, tile=tile, halo=self.halo, out_device="cpu")

    def enhance(self, image: np.ndarray, *, tile: int | None = None, exposure_bias: float | None = None) -> np.ndarray:
        """Enhance one HxW, HxWx1, HxWx3 or HxWx4 array (uint8, uint16 or float in [0, 1]).

        The result has the input's dtype and layout; an alpha channel is passed through and a
        grayscale image stays grayscale. ``exposure_bias``: stops (None: the enhancer's own).
        """
        from nasflow.infer.imageio import from_array, to_array

        rgb, alpha, _bits, gray = from_array(image)
        out = self.enhance_rgb(rgb, tile=tile, exposure_bias=exposure_bias)
        result = to_array(out, alpha, image.dtype, gray, keepdims=image.ndim == 3)
        if image.ndim == 3 and image.shape[2] == 4:
            result[..., 3] = image[..., 3]  # alpha passes through bit-exact, whatever the dtype
        return result

    def enhance_rgb(self, rgb: np.ndarray, *, tile: int | None = None,
                    exposure_bias: float | None = None) -> np.ndarray:
        """float32 HxWx3 in [0, 1] -> float32 HxWx3 in [0, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
        y = self.enhance_tensor(x, tile=tile, exposure_bias=exposure_bias)
        return y[0].permute(1, 2, 0).numpy()


def load_model(model: str | Path, *, device: str | torch.device = "auto", tile: int | None = None,
               precision: str = "fp32", cuda_graphs: bool | None = None, compile: bool = False,
               exposure_bias: float = 0.0) -> Enhancer:
    """A shipped model by name (``nasflow list models``), a model file, or a finished run folder.

    ``precision`` (fp32, or fp16/bf16 on CUDA), ``cuda_graphs``, ``compile`` and ``exposure_bias`` (stops)
    are described at :class:`Enhancer`.
    """
    dev = pick_device(device, "--device")
    pick_precision(precision, dev)  # a bad precision fails before the model is read
    return Enhancer(load_network(model, device=dev), dev, tile=tile, precision=precision, cuda_graphs=cuda_graphs,
                    compile=compile, exposure_bias=exposure_bias)
