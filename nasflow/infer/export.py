"""``nasflow export``: a trained image-to-image model as a self-contained TorchScript or ONNX file.

The exported function is the one ``nasflow enhance`` computes on a whole image: an NCHW float
batch in [0, 1] -> ``task.predict(network, images)``, the clamped enhanced output, with the plain
compiled network (not the fused fast path, not tiled). Batch, height and width stay dynamic.

Every export is checked before it is kept: the written file is loaded back (``torch.jit.load``;
for ONNX ``onnxruntime`` when installed, else ``onnx.checker``) and compared with the plain module
on a random image of a size other than the tracing example. A difference above ``tolerance``
deletes the file and raises.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from nasflow.atomic import atomic_temp
from nasflow.errors import ConfigError, NasflowError

FORMATS = ("torchscript", "onnx")
TRACE_SIZE = (1, 3, 64, 48)  # the example the graph is traced with
CHECK_SIZES = ((1, 3, 67, 91),)  # sizes the reloaded file is compared on (differ from TRACE_SIZE)
TOLERANCE = 1e-5
ONNX_OPSET = 17
ONNX_HINT = "pip install onnx onnxruntime"


class ExportCheckFailed(NasflowError):
    """The exported file does not compute what the model computes (it has been deleted)."""


class PredictModule(nn.Module):
    """``images -> task.predict(network, images)``: NCHW in [0, 1] to the clamped enhanced image."""

    def __init__(self, task: Any, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self._predict: Callable[[nn.Module, torch.Tensor], torch.Tensor] = task.predict

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._predict(self.network, images)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float
    checked_with: str  # what loaded the file back for the check
    size_bytes: int

    def summary(self) -> str:
        if self.max_abs_diff != self.max_abs_diff:  # NaN: loaded and validated, but not run
            check = f"checked with {self.checked_with}"
        else:
            check = (f"check with {self.checked_with}: max abs diff {self.max_abs_diff:.2e} on "
                     f"{'x'.join(map(str, CHECK_SIZES[0]))}")
        return f"wrote {self.format} model {self.path} ({check}; {self.size_bytes / 1024:.1f} KB)"


def predict_module(spec: str | Path) -> PredictModule:
    """The module that is exported, rebuilt from a shipped name, a model file or a run folder."""
    from nasflow.infer.models import load_network

    from nasflow.infer.image_task import image_task

    loaded = load_network(spec, device="cpu")
    task = image_task(loaded.task, str(loaded.source))
    module = PredictModule(task, loaded.network).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:  # probe: tasks that are not image-to-image raise NotImplementedError
        with torch.no_grad():
            module(torch.rand(*TRACE_SIZE))
    except NotImplementedError as exc:
        raise ConfigError(f"{loaded.source}: {exc}; only image-to-image models can be exported") from None
    return module


def _write_torchscript(module: nn.Module, tmp: Path) -> None:
    example = torch.rand(*TRACE_SIZE)
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=True)
    buffer = io.BytesIO()  # through a buffer: the archive's inner folder is 'archive', not the temp name
    torch.jit.save(traced, buffer)
    tmp.write_bytes(buffer.getvalue())


def _write_onnx(module: nn.Module, tmp: Path) -> None:
    example = torch.rand(*TRACE_SIZE)
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(module, (example,), str(tmp), input_names=["images"], output_names=["enhanced"],
                          dynamic_axes={"images": axes, "enhanced": axes}, opset_version=ONNX_OPSET,
                          dynamo=False)


def _load_torchscript(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    scripted = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return scripted(x)

    return run, "torch.jit.load"


def _load_onnx(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    import onnx

    onnx.checker.check_model(str(path))
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnx.checker (onnxruntime not installed: outputs not compared)"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    return run, "onnxruntime"


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError(f"ONNX export needs the optional 'onnx' package: {ONNX_HINT}") from None


def check_export(module: nn.Module, run: Callable[[torch.Tensor], torch.Tensor],
                 sizes: tuple[tuple[int, ...], ...] = CHECK_SIZES, seed: int = 0) -> float:
    """Largest absolute difference between ``run`` and ``module`` over random images of ``sizes``."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for size in sizes:
        x = torch.rand(*size, generator=gen) * 0.5
        with torch.no_grad():
            want = module(x)
        got = run(x)
        if tuple(got.shape) != tuple(want.shape):
            return float("inf")
        worst = max(worst, (got.float() - want.float()).abs().max().item())
    return worst


def export_model(spec: str | Path, out: str | Path, fmt: str = "torchscript", overwrite: bool = False,
                 tolerance: float = TOLERANCE) -> ExportResult:
    """Export ``spec`` (shipped name, model file or run folder) to ``out``; see the module docstring."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}' (choose from {', '.join(FORMATS)})")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"output {out} is a folder; give a file name (e.g. {out / ('model' + _suffix(fmt))})")
    if out.exists() and not overwrite:
        raise ConfigError(f"output {out} exists; pass --overwrite to replace it")
    if fmt == "onnx":
        _require_onnx()
    module = predict_module(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_temp(out, private=True) as tmp:  # checked before it replaces anything; removed on failure
        (_write_onnx if fmt == "onnx" else _write_torchscript)(module, tmp)
        run, how = (_load_onnx if fmt == "onnx" else _load_torchscript)(tmp)
        diff = check_export(module, run) if run is not None else float("nan")
        if not diff <= tolerance and run is not None:
            raise ExportCheckFailed(f"exported {fmt} model differs from the model (max abs diff {diff:.3g} > "
                                    f"{tolerance:g}); nothing written to {out}")
    return ExportResult(path=out, format=fmt, max_abs_diff=diff, checked_with=how, size_bytes=out.stat().st_size)


def _suffix(fmt: str) -> str:
    return ".onnx" if fmt == "onnx" else ".pt"
