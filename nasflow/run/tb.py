"""TensorBoard logging for runs: ``tensorboard --logdir runs/``.

:func:`open_writer` gives a :class:`Writer` (a thin wrapper over
``torch.utils.tensorboard.SummaryWriter``) or, when logging is disabled or there is no folder,
a :class:`NullWriter` (a Writer whose methods do nothing, writing no files), so callers never
branch. Both are context managers.

Tags written (the contract; ``step`` is the caller's global step):

``<key>`` (scalar)
    :meth:`Writer.scalars`: each key of ``logs`` is its own tag, as given, e.g. ``train/loss``,
    ``train/iem/loss``, ``lr/weights``; with ``search.cost``, per search group ``cost/<group>/expected_<unit>``
    (``ms``, ``flops`` or ``params``: the cells' expected cost at the group's last arch step) and, with
    ``target_ms``, ``cost/<group>/lambda`` (the Lagrange multiplier).
``arch/<label>/<edge>/<op>`` (scalar)
    :meth:`Writer.arch`: softmax probability of ``op`` on edge ``<edge>`` (the label's cell-graph
    edge name, e.g. ``c1_d``) of label ``<label>``; sums to 1 over the ops of an edge.
``genotype/text`` (text)
    :meth:`Writer.genotype`: the genotype's JSON as a markdown code block.
``genotype/image`` (image)
    :meth:`Writer.genotype`: the genotype picture (PNG rendered by Graphviz, as ``nasflow viz``
    draws it); only when the ``dot`` binary exists, silently left out otherwise.
``samples/<name>`` (image)
    :meth:`Writer.images`: a CHW image, or an NCHW batch tiled into one grid; clamped to [0, 1].
``hparams/<metric>`` (scalar) and the HPARAMS tab
    :meth:`Writer.hparams`: the config flattened to dotted keys (``search.epochs``,
    ``search.arch_optimizer.lr``, ...; lists and None as strings) with the final metrics.

Everything lands in the one ``log_dir`` (the run folder), so each run is one line in TensorBoard.
"""

from __future__ import annotations

import dataclasses
import io
import math
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import nn

from nasflow.core.cell import ArchAlphas

if TYPE_CHECKING:
    from nasflow.core.genotype import Genotype

__all__ = ["Writer", "NullWriter", "open_writer", "flatten_config", "arch_scalars", "genotype_markdown"]

ARCH_PREFIX = "arch"
GENOTYPE_TEXT_TAG = "genotype/text"
GENOTYPE_IMAGE_TAG = "genotype/image"
SAMPLES_PREFIX = "samples"
HPARAMS_PREFIX = "hparams"


# -- pure helpers (no TensorBoard needed) ---------------------------------------------------------
def _find_arch(model_or_arch: nn.Module | ArchAlphas) -> ArchAlphas:
    if isinstance(model_or_arch, ArchAlphas):
        return model_or_arch
    arch = getattr(model_or_arch, "arch", None)
    if isinstance(arch, ArchAlphas):
        return arch
    from nasflow.core.supernet import find_arch

    return find_arch(model_or_arch)


def arch_scalars(model_or_arch: nn.Module | ArchAlphas) -> dict[str, float]:
    """``{'arch/<label>/<edge>/<op>': softmax probability}`` for every label, edge and op."""
    arch = _find_arch(model_or_arch)
    out: dict[str, float] = {}
    for label in arch.labels:
        graph = arch.graph(label)
        probs = torch.softmax(arch.alphas[label].detach().float(), dim=-1).cpu()
        for row, edge in enumerate(graph.edges):
            for col, op in enumerate(graph.candidates):
                out[f"{ARCH_PREFIX}/{label}/{edge.name}/{op}"] = float(probs[row, col])
    return out


def genotype_markdown(genotype: "Genotype") -> str:
    """The genotype's JSON as a fenced markdown code block (TensorBoard renders markdown)."""
    return "```json\n" + genotype.to_json(indent=2) + "\n```"


def genotype_png_array(genotype: "Genotype") -> np.ndarray | None:
    """The genotype picture as an ``HWC`` uint8 RGB array, or None when Graphviz cannot render it."""
    if shutil.which("dot") is None:
        return None
    import graphviz
    from PIL import Image

    from nasflow.core.viz import genotype_digraph

    try:
        data = genotype_digraph(genotype).pipe(format="png")
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (graphviz.ExecutableNotFound, subprocess.CalledProcessError, OSError):
        return None


def _hparam_value(value: Any) -> str | int | float | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)  # lists, tuples, None, anything else: readable and comparable as text


def flatten_config(config: Any, prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested mappings (or dataclasses) to ``{'search.epochs': 10, ...}`` with scalar values.

    Lists/tuples and ``None`` become strings; an empty mapping becomes ``'{}'`` so its key stays.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if not isinstance(config, Mapping):
        if not prefix:
            raise TypeError(f"hparams config must be a mapping or a dataclass, got {type(config).__name__}")
        return {prefix: _hparam_value(config)}
    if not config and prefix:
        return {prefix: "{}"}
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            flat.update(flatten_config(value, name))
        else:
            flat[name] = _hparam_value(value)
    return flat


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu().item())
    return float(value)


def _image_batch(image: torch.Tensor, tag: str) -> tuple[torch.Tensor, str]:
    """(tensor clamped to [0, 1] on CPU, dataformats) for ``HW``, ``CHW`` or ``NCHW`` input."""
    t = image.detach().float().cpu()
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() not in (3, 4):
        raise ValueError(f"image '{tag}': expected a CHW or NCHW tensor, got shape {tuple(image.shape)}")
    channels = t.shape[-3]
    if channels not in (1, 3, 4):
        raise ValueError(f"image '{tag}': expected 1, 3 or 4 channels, got {channels}")
    t = torch.nan_to_num(t, nan=0.0).clamp_(0.0, 1.0)
    return t, ("CHW" if t.dim() == 3 else "NCHW")


# -- writers --------------------------------------------------------------------------------------
class Writer:
    """TensorBoard event files in ``log_dir``; see the module docstring for the tags."""

    enabled = True

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir: Path | None = Path(log_dir)
        self._sw: Any = SummaryWriter(log_dir=str(self.log_dir))
        self._closed = False

    @property
    def summary_writer(self) -> Any:
        """The underlying ``SummaryWriter`` (None for a :class:`NullWriter`), for anything else."""
        return self._sw

    def scalars(self, logs: Mapping[str, float], step: int) -> None:
        """Each key of ``logs`` as its own scalar tag."""
        for tag, value in logs.items():
            self._sw.add_scalar(str(tag), _as_float(value), global_step=int(step))

    def arch(self, model_or_arch: nn.Module | ArchAlphas, step: int) -> None:
        """``arch/<label>/<edge>/<op>``: softmax probabilities of a supernet's (or ArchAlphas') alphas."""
        self.scalars(arch_scalars(model_or_arch), step)

    def genotype(self, genotype: "Genotype", step: int = 0) -> None:
        """``genotype/text`` always; ``genotype/image`` when Graphviz ``dot`` can render it."""
        # SummaryWriter.add_text would store the tag as 'genotype/text/text_summary'; keep it exact.
        from tensorboard.plugins.text.summary_v2 import text_pb

        summary = text_pb(GENOTYPE_TEXT_TAG, genotype_markdown(genotype))
        self._sw._get_file_writer().add_summary(summary, int(step))
        picture = genotype_png_array(genotype)
        if picture is not None:
            self._sw.add_image(GENOTYPE_IMAGE_TAG, picture, global_step=int(step), dataformats="HWC")

    def images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        """``samples/<name>`` per entry: a CHW image or an NCHW batch, clamped to [0, 1]."""
        for name, image in images.items():
            tag = f"{SAMPLES_PREFIX}/{name}"
            tensor, formats = _image_batch(image, tag)
            if formats == "CHW":
                self._sw.add_image(tag, tensor, global_step=int(step), dataformats=formats)
            else:
                self._sw.add_images(tag, tensor, global_step=int(step), dataformats=formats)

    def hparams(self, config: Any, metrics: Mapping[str, float]) -> None:
        """The flattened config and final metrics (as ``hparams/<metric>``), in this run's folder.

        Metrics that are not finite numbers (NaN, strings, ...) are left out.
        """
        metric_dict = {}
        for name, value in metrics.items():
            try:
                v = _as_float(value)
            except (TypeError, ValueError, RuntimeError):
                continue
            if math.isfinite(v):
                metric_dict[f"{HPARAMS_PREFIX}/{name}"] = v
        self._sw.add_hparams(flatten_config(config), metric_dict, run_name=".")

    def flush(self) -> None:
        self._sw.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sw.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullWriter(Writer):
    """Every method of :class:`Writer`, doing nothing; writes no files."""

    enabled = False

    def __init__(self) -> None:
        self.log_dir = None
        self._sw = None
        self._closed = True

    def scalars(self, logs: Mapping[str, float], step: int) -> None:
        pass

    def arch(self, model_or_arch: nn.Module | ArchAlphas, step: int) -> None:
        pass

    def genotype(self, genotype: "Genotype", step: int = 0) -> None:
        pass

    def images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        pass

    def hparams(self, config: Any, metrics: Mapping[str, float]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_writer(log_dir: str | Path | None, enabled: bool = True) -> Writer:
    """A :class:`Writer` into ``log_dir``, or a :class:`NullWriter` when disabled or ``log_dir`` is None."""
    if not enabled or log_dir is None:
        return NullWriter()
    return Writer(log_dir)
