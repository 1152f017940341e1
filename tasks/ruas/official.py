"""Import the RUAS authors' released checkpoints (``lol.pt``, ``upe.pt``, ``dark.pt``) as nasflow model files.

The released files are plain state dicts saved in the legacy (pre-1.6, non-zip) torch format.
They are read with ``torch.load(..., weights_only=True)`` only: a file that would need to run
code while loading is refused, never executed. Tensor names map one to one onto the network
that :func:`~nasflow.tasks.ruas.model.paper_genotype` compiles to::

    enhance_net.iems.{k}.cell.{edge}.*    ->  iem_cells.{k}.edges.{edge}.*
    enhance_net.iems.{k}.cell.c5.*        ->  iem_cells.{k}.post.*
    denoise_net.stem.*                    ->  nrm_stem.*
    denoise_net.nrms.{k}.{edge}.*         ->  nrm_cells.{k}.edges.{edge}.*
    denoise_net.nrms.{k}.c5.*             ->  nrm_cells.{k}.post.*
    denoise_net.activate.0.*              ->  nrm_out.*

A file with all 76 tensors is IEM + NRM; one with only the 36 ``enhance_net.*`` tensors (the
MIT/UPE model) is IEM only (``use_nrm: false``). The written model file has the layout of a run
folder's ``model.pt`` (``state_dict``, ``genotype``, ``config``) plus ``meta``, so it is rebuilt
the same way as :func:`nasflow.runner.evaluate_run` rebuilds a run's network.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import hashlib
import pickle
import pickletools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from nasflow.checkpoint import save_atomic
from nasflow.compile import compile_model
from nasflow.config import from_dict, to_dict
from nasflow.errors import ConfigError
from nasflow.genotype import Genotype
from nasflow.schema import RunConfig
from nasflow.tasks.ruas.model import RUASNet, paper_genotype

# The released networks: 3 IEM stages on RGB, 3 NRM cells on 6 channels.
IEM_STAGES = 3
NRM_CELLS = 3
NRM_CHANNELS = 6
SOURCE = "RUAS released checkpoint"

_OURS_TO_RELEASED = (
    (re.compile(r"^iem_cells\.(\d+)\.edges\.(\w+)\.(.+)$"), r"enhance_net.iems.\1.cell.\2.\3"),
    (re.compile(r"^iem_cells\.(\d+)\.post\.(.+)$"), r"enhance_net.iems.\1.cell.c5.\2"),
    (re.compile(r"^nrm_stem\.(.+)$"), r"denoise_net.stem.\1"),
    (re.compile(r"^nrm_cells\.(\d+)\.edges\.(\w+)\.(.+)$"), r"denoise_net.nrms.\1.\2.\3"),
    (re.compile(r"^nrm_cells\.(\d+)\.post\.(.+)$"), r"denoise_net.nrms.\1.c5.\2"),
    (re.compile(r"^nrm_out\.(.+)$"), r"denoise_net.activate.0.\1"),
)
_WRAPPERS = ("state_dict", "model")
_SAFE_MODULES = ("torch", "collections")  # globals a plain state dict may name (tensor rebuilders, OrderedDict)


def released_name(name: str) -> str:
    """The released checkpoint's name for the compiled network's tensor ``name``."""
    for pattern, replacement in _OURS_TO_RELEASED:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    raise ValueError(f"no released RUAS tensor corresponds to '{name}'")  # a bug: the network grew a module


def target_network(use_nrm: bool) -> torch.nn.Module:
    """The compiled network the released weights fill (paper genotype, released sizes)."""
    supernet = RUASNet(iem_stages=IEM_STAGES, nrm_cells=NRM_CELLS, nrm_channels=NRM_CHANNELS, use_nrm=use_nrm)
    return compile_model(supernet, paper_genotype(use_nrm))


@functools.lru_cache(maxsize=2)
def _layout_items(use_nrm: bool) -> tuple[tuple[str, str, torch.Size], ...]:
    layout: dict[str, tuple[str, torch.Size]] = {}
    for ours, tensor in target_network(use_nrm).state_dict().items():
        theirs = released_name(ours)
        if theirs in layout:
            raise AssertionError(f"'{ours}' and '{layout[theirs][0]}' both map to '{theirs}'")
        layout[theirs] = (ours, tensor.shape)
    return tuple((theirs, ours, shape) for theirs, (ours, shape) in layout.items())


def _layout(use_nrm: bool) -> dict[str, tuple[str, torch.Size]]:
    """released name -> (our name, shape), in the network's order; each name used exactly once."""
    return {theirs: (ours, shape) for theirs, ours, shape in _layout_items(use_nrm)}


def _shape(shape: torch.Size) -> str:
    return str(tuple(shape))


def _uses_nrm(state: Mapping[str, Any]) -> bool:
    return any(key.startswith("denoise_net.") for key in state)


def check_released(state: Mapping[str, Any], where: str = "checkpoint") -> bool:
    """Check names, types and shapes against the released layout; returns ``use_nrm``.

    Every problem is a one-line :class:`ConfigError` naming the first offending key.
    """
    if not state:
        raise ConfigError(f"{where}: the state dict holds no tensors")
    for key in state:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: key {key!r} is not a string; not a RUAS released checkpoint")
    if not any(key.startswith(("enhance_net.", "denoise_net.")) for key in state):
        first = next(iter(state))
        ours = " (it looks like a nasflow state dict already)" if first.startswith("iem_cells.") else ""
        raise ConfigError(f"{where}: not a RUAS released checkpoint: none of its {len(state)} key(s) is an "
                          f"enhance_net./denoise_net. tensor (first key: '{first}'){ours}")
    use_nrm = _uses_nrm(state)
    layout = _layout(use_nrm)
    for key in state:
        if key not in layout:
            close = difflib.get_close_matches(key, list(layout), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}' (not in the released RUAS layout{hint})")
    missing = [key for key in layout if key not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        what = "IEM + NRM" if use_nrm else "IEM"
        raise ConfigError(f"{where}: missing key '{missing[0]}'{more} of the released RUAS {what} layout")
    for key, (_, shape) in layout.items():
        tensor = state[key]
        if not isinstance(tensor, torch.Tensor):
            raise ConfigError(f"{where}: {key}: expected a tensor, found {type(tensor).__name__}")
        if tensor.shape != shape:
            raise ConfigError(f"{where}: {key}: expected shape {_shape(shape)}, found {_shape(tensor.shape)}")
        if not tensor.is_floating_point():
            raise ConfigError(f"{where}: {key}: expected floating-point weights, found {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f"{where}: {key}: holds NaN or infinite values")
    return use_nrm


# --- reading the file ----------------------------------------------------------------------------
def _unsafe_global(path: Path) -> str | None:
    """The first non-torch global the file's leading pickles name, found by parsing (never running) them.

    Used only to word an error: torch's weights-only unpickler has already refused the file.
    """
    try:
        with path.open("rb") as f:
            for _ in range(4):  # legacy torch files: magic number, protocol, sys info, then the data
                strings: list[str] = []
                for opcode, arg, _pos in pickletools.genops(f):
                    if isinstance(arg, str):
                        strings.append(arg)
                    name = None
                    if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
                        name = arg.replace(" ", ".")
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        name = f"{strings[-2]}.{strings[-1]}"
                    if name is not None and name.split(".")[0] not in _SAFE_MODULES:
                        return name
    except Exception:  # noqa: BLE001 - not (or no longer) a pickle stream
        return None
    return None


def _first_line(exc: BaseException, limit: int = 120) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def _load_file(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ConfigError(f"cannot read checkpoint {path}: {exc.strerror or _first_line(exc)}") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        name = found.group(1) if found else _unsafe_global(path)
        if name is not None:
            raise ConfigError(f"{path}: refused: the file needs arbitrary code to load (it pickles {name}); only "
                              f"plain state dicts of tensors are accepted") from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
        reason = detail.group(1).strip() if detail else _first_line(exc)
        raise ConfigError(f"{path}: not a torch checkpoint ({reason})") from None
    except EOFError:
        raise ConfigError(f"{path}: not a torch checkpoint (the file is empty or truncated)") from None
    except Exception as exc:  # noqa: BLE001 - any other failure to parse means a bad file
        raise ConfigError(f"{path}: not a torch checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None


def _unwrap(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: expected a state dict, found {type(obj).__name__}")
    for wrapper in _WRAPPERS:
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj = inner
            break
    state: dict[str, Any] = {}
    for key, value in obj.items():
        name = key[len("module."):] if isinstance(key, str) and key.startswith("module.") else key  # DataParallel
        if name in state:
            raise ConfigError(f"{where}: key '{name}' appears twice (with and without the 'module.' prefix)")
        state[name] = value
    return state


def load_released_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read and check a released RUAS checkpoint; returns its tensors under the released names.

    Accepts a bare state dict or one wrapped under ``state_dict``/``model``, with or without the
    ``module.`` prefix of DataParallel. Raises :class:`ConfigError` (one line) for a missing or
    unreadable file, a file that needs code to load, and unknown, missing or misshapen tensors.
    """
    path = Path(path)
    state = _unwrap(_load_file(path), str(path))
    check_released(state, str(path))
    return state


def convert_released(state: Mapping[str, torch.Tensor]) -> tuple[Genotype, dict[str, torch.Tensor], bool]:
    """``(genotype, state_dict, use_nrm)`` of the compiled nasflow network holding the released weights.

    ``use_nrm`` is detected from the names (``denoise_net.*`` present); every tensor of the target
    network is filled from exactly one released tensor (float32, contiguous copies).
    """
    use_nrm = check_released(state)
    layout = _layout(use_nrm)
    converted: dict[str, torch.Tensor] = {}
    for theirs, (ours, shape) in layout.items():
        if ours in converted or state[theirs].shape != shape:
            raise AssertionError(f"'{ours}' filled twice or misshapen")  # a bug, not a user error
        converted[ours] = state[theirs].detach().to(torch.float32).contiguous().clone()
    if len(converted) != len(_layout_items(use_nrm)) or set(layout) != set(state):
        raise AssertionError("released RUAS tensors do not fill the network exactly once")  # a bug, not a user error
    return paper_genotype(use_nrm), converted, use_nrm


# --- writing the model file ----------------------------------------------------------------------
def run_config(use_nrm: bool) -> dict[str, Any]:
    """The saved config: task ``ruas`` with the released sizes and synthetic data (valid without data)."""
    from nasflow.tasks.ruas.task import RUASOptions

    options = {"data": "synthetic", "use_nrm": use_nrm, "iem_stages": IEM_STAGES, "nrm_cells": NRM_CELLS,
               "nrm_channels": NRM_CHANNELS}
    cfg = from_dict(RunConfig, {"task": "ruas", "task_options": options})
    from_dict(RUASOptions, cfg.task_options, "task_options")
    return to_dict(cfg)


def _rebuild(saved: Mapping[str, Any]) -> torch.nn.Module:
    """The network of a model file, rebuilt as ``nasflow.runner.evaluate_run`` does (strict load)."""
    from nasflow.runner import build_task

    cfg = from_dict(RunConfig, saved["config"])
    task = build_task(cfg, torch.device("cpu"))
    model = compile_model(task.build_supernet(), Genotype.from_dict(saved["genotype"]))
    model.load_state_dict(saved["state_dict"])
    return model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImportResult:
    path: Path  # the model file written
    use_nrm: bool
    parameters: int
    sha256: str  # of the released file

    @property
    def modules(self) -> str:
        iem = f"IEM ({IEM_STAGES} stages)"
        return f"{iem} + NRM ({NRM_CELLS} cells)" if self.use_nrm else f"{iem} only"


def import_checkpoint(path: str | Path, out: str | Path, *, overwrite: bool = False) -> ImportResult:
    """:func:`import_released`, returning what was written (for the command's report)."""
    path, out = Path(path), Path(out)
    if out.is_dir():
        raise ConfigError(f"output {out} is a folder; give the model file's name (e.g. {out / 'ruas-official.pt'})")
    if out.exists() and not overwrite:
        raise ConfigError(f"output {out} exists; refusing to overwrite it (pass --overwrite / overwrite=True)")
    state = load_released_state_dict(path)
    genotype, state_dict, use_nrm = convert_released(state)
    sha = _sha256(path)
    saved = {
        "state_dict": state_dict,
        "genotype": genotype.to_dict(),
        "config": run_config(use_nrm),
        "meta": {"source": SOURCE, "file": path.name, "sha256": sha},
    }
    _rebuild(saved)  # the file must load the way run folders do; check before writing anything
    save_atomic(saved, out)
    return ImportResult(out, use_nrm, sum(t.numel() for t in state_dict.values()), sha)


def import_released(path: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Convert the released checkpoint ``path`` into the nasflow model file ``out``; returns ``out``.

    Refuses (:class:`ConfigError`) to overwrite an existing ``out`` unless ``overwrite``.
    """
    return import_checkpoint(path, out, overwrite=overwrite).path


# --- the CLI subcommand --------------------------------------------------------------------------
class ImportRuasCommand:
    """``nasflow import-ruas CKPT -o MODEL``: a released RUAS checkpoint as a nasflow model file."""

    name = "import-ruas"
    help = "convert a released RUAS checkpoint (lol.pt, upe.pt, dark.pt) into a nasflow model file"
    description = """\
Convert one of the RUAS authors' released checkpoints (a plain state dict, legacy or current
torch format) into a nasflow model file: the paper genotype, the weights under nasflow's names
and a config for task 'ruas'. A checkpoint with the denoise_net tensors gives IEM + NRM; one
with only the enhance_net tensors (upe.pt) gives the IEM alone. The checkpoint is read without
running any code from it: a file that would need to is refused."""
    epilog = """\
examples:
  nasflow import-ruas lol.pt -o ruas-official-lol.pt
  nasflow enhance photos/ -o out/ --model ruas-official-lol.pt
  nasflow import-ruas upe.pt -o ruas-official-upe.pt               IEM only (upe.pt has no NRM)
  nasflow import-ruas dark.pt -o ruas-official-dark.pt --overwrite replace an existing model file"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ckpt", metavar="CKPT", help="released RUAS checkpoint (e.g. lol.pt, upe.pt, dark.pt)")
        parser.add_argument("-o", "--output", metavar="MODEL", required=True,
                            help="the nasflow model file to write (e.g. ruas-official-lol.pt)")
        parser.add_argument("--overwrite", action="store_true", help="replace MODEL if it exists")

    def run(self, args: argparse.Namespace) -> int:
        result = import_checkpoint(args.ckpt, args.output, overwrite=args.overwrite)
        print(f"wrote {result.path}: RUAS {result.modules}, {result.parameters:,} parameters, "
              f"from {Path(args.ckpt).name} (sha256 {result.sha256})")
        return 0
