"""Import the RUAS authors' released checkpoints as nasflow model files, run as the authors run them.

Two releases are recognised by their tensor layout (names and shapes), never by running code:

* **CVPR 2021** (``KarelZhang/RUAS``: ``lol.pt``, ``upe.pt``, ``dark.pt``): 76 tensors, IEM + NRM,
  the paper genotype. All three files hold the NRM, but the authors' ``test.py`` saves the NRM
  output only for ``lol`` and the IEM output for ``upe`` and ``dark``. The layout cannot tell the
  files apart, so the file name does: a file named ``upe.pt`` or ``dark.pt`` is imported as the IEM
  alone, any other as IEM + NRM; ``module`` (``--module iem|iem+nrm``) overrides the rule. A file
  of only the 36 ``enhance_net.*`` tensors is the IEM alone.
* **journal** (TPAMI, "Learning with Nested Scene Modeling and Cooperative Architecture Search for
  Low-Light Vision": ``lol.pt``, ``mit.pt``, ``darkface.pt``): 98 tensors, 36,653 parameters:
  the IEM, an NRM with its own genotype, and the ``estimation`` noise gate that switches the NRM per
  image (:mod:`nasflow.tasks.ruas.journal`, task option ``variant: journal``).

The files are plain state dicts (legacy pre-1.6 or current torch format), read with
``torch.load(..., weights_only=True)`` only: a file that would need to run code while loading is
refused, never executed. Tensor names map one to one onto the compiled network::

    enhance_net.iems.{k}.cell.{edge}.*    ->  iem_cells.{k}.edges.{edge}.*
    enhance_net.iems.{k}.cell.c5.*        ->  iem_cells.{k}.post.*
    denoise_net.stem.*                    ->  nrm_stem.*
    denoise_net.nrms.{k}.{edge}.*         ->  nrm_cells.{k}.edges.{edge}.*
    denoise_net.nrms.{k}.c5.*             ->  nrm_cells.{k}.post.*
    denoise_net.activate.0.*              ->  nrm_out.*
    estimation.estimation.{i}.*           ->  noise_gate.{i}.*          (journal)

Tensors of modules left out (the NRM of an IEM-only import) are checked, then dropped. The written
model file has the layout of a run folder's ``model.pt`` (``state_dict``, ``genotype``, ``config``)
plus ``meta``, so it is rebuilt the same way as :func:`nasflow.run.runner.evaluate_run` rebuilds a run's
network.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import hashlib
import pickle
import pickletools
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from nasflow.run.modelfile import model_payload, rebuild, save_model_file
from nasflow.core.compile import compile_model
from nasflow.config import from_dict, to_dict
from nasflow.errors import ConfigError
from nasflow.core.genotype import Genotype
from nasflow.schema import RunConfig
from nasflow.tasks.ruas.model import RUASNet, paper_genotype

# The released networks: 3 IEM stages on RGB, 3 NRM cells on 6 channels.
IEM_STAGES = 3
NRM_CELLS = 3
NRM_CHANNELS = 6
SOURCE = "RUAS released checkpoint"
MODULES = ("iem", "iem+nrm")
IEM_ONLY_STEMS = ("upe", "dark")  # the CVPR test.py saves the IEM output (u_list[-2]) for these two

_OURS_TO_RELEASED = (
    (re.compile(r"^iem_cells\.(\d+)\.edges\.(\w+)\.(.+)$"), r"enhance_net.iems.\1.cell.\2.\3"),
    (re.compile(r"^iem_cells\.(\d+)\.post\.(.+)$"), r"enhance_net.iems.\1.cell.c5.\2"),
    (re.compile(r"^nrm_stem\.(.+)$"), r"denoise_net.stem.\1"),
    (re.compile(r"^nrm_cells\.(\d+)\.edges\.(\w+)\.(.+)$"), r"denoise_net.nrms.\1.\2.\3"),
    (re.compile(r"^nrm_cells\.(\d+)\.post\.(.+)$"), r"denoise_net.nrms.\1.c5.\2"),
    (re.compile(r"^nrm_out\.(.+)$"), r"denoise_net.activate.0.\1"),
    (re.compile(r"^noise_gate\.(\d+)\.(.+)$"), r"estimation.estimation.\1.\2"),
)
_PREFIXES = ("enhance_net.", "denoise_net.", "estimation.")
_WRAPPERS = ("state_dict", "model")
_SAFE_MODULES = ("torch", "collections")  # globals a plain state dict may name (tensor rebuilders, OrderedDict)


@dataclass(frozen=True)
class Release:
    """One tensor layout of the authors' releases: which network it fills and what it holds."""

    name: str  # e.g. "CVPR 2021"
    files: str  # the authors' file names
    variant: str  # task_options.variant of the network
    has_nrm: bool  # the file holds NRM tensors

    @property
    def title(self) -> str:
        return f"{self.name} release ({self.files})"


CVPR = Release("CVPR 2021", "lol.pt, upe.pt, dark.pt", "cvpr", True)
CVPR_IEM = Release("CVPR 2021", "an IEM-only file: the enhance_net tensors alone", "cvpr", False)
JOURNAL = Release("journal", "lol.pt, mit.pt, darkface.pt", "journal", True)
RELEASES = (CVPR, CVPR_IEM, JOURNAL)


def released_name(name: str) -> str:
    """The released checkpoint's name for the compiled network's tensor ``name``."""
    for pattern, replacement in _OURS_TO_RELEASED:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    raise ValueError(f"no released RUAS tensor corresponds to '{name}'")  # a bug: the network grew a module


def release_genotype(use_nrm: bool, variant: str = "cvpr") -> Genotype:
    """The genotype of a release's network (the paper's for CVPR, the journal's own)."""
    if variant == "journal":
        from nasflow.tasks.ruas.journal import journal_genotype

        return journal_genotype(use_nrm)
    return paper_genotype(use_nrm)


def target_network(use_nrm: bool, variant: str = "cvpr") -> torch.nn.Module:
    """The compiled network the released weights fill (released genotype and sizes)."""
    cls = RUASNet
    if variant == "journal":
        from nasflow.tasks.ruas.journal import JournalRUASNet

        cls = JournalRUASNet
    supernet = cls(iem_stages=IEM_STAGES, nrm_cells=NRM_CELLS, nrm_channels=NRM_CHANNELS, use_nrm=use_nrm)
    return compile_model(supernet, release_genotype(use_nrm, variant))


@functools.lru_cache(maxsize=8)
def _layout_items(use_nrm: bool, variant: str = "cvpr") -> tuple[tuple[str, str, torch.Size], ...]:
    layout: dict[str, tuple[str, torch.Size]] = {}
    for ours, tensor in target_network(use_nrm, variant).state_dict().items():
        theirs = released_name(ours)
        if theirs in layout:
            raise AssertionError(f"'{ours}' and '{layout[theirs][0]}' both map to '{theirs}'")
        layout[theirs] = (ours, tensor.shape)
    return tuple((theirs, ours, shape) for theirs, (ours, shape) in layout.items())


def _layout(use_nrm: bool, variant: str = "cvpr") -> dict[str, tuple[str, torch.Size]]:
    """released name -> (our name, shape), in the network's order; each name used exactly once."""
    return {theirs: (ours, shape) for theirs, ours, shape in _layout_items(use_nrm, variant)}


def release_layout(release: Release) -> dict[str, tuple[str, torch.Size]]:
    """The tensors a file of ``release`` holds: released name -> (our name, shape)."""
    return _layout(release.has_nrm, release.variant)


def _shape(shape: torch.Size) -> str:
    return str(tuple(shape))


def _found(state: Mapping[str, Any]) -> str:
    """What a state dict holds, by module prefix (for error messages)."""
    counts = {prefix.rstrip("."): sum(1 for k in state if k.startswith(prefix)) for prefix in _PREFIXES}
    parts = [f"{name} {n}" for name, n in counts.items() if n]
    other = len(state) - sum(counts.values())
    if other:
        parts.append(f"other {other}")
    return f"{len(state)} tensors ({', '.join(parts)})"


def _supported() -> str:
    full = "; ".join(f"{r.title}: {len(release_layout(r))} tensors" for r in (CVPR, JOURNAL))
    return f"{full} (or CVPR's {len(release_layout(CVPR_IEM))} IEM tensors alone)"


def _closest(state: Mapping[str, Any]) -> Release:
    """The release whose layout the state dict differs least from (names and shapes)."""
    def score(release: Release) -> int:
        layout = release_layout(release)
        same = sum(1 for k, (_, shape) in layout.items()
                   if isinstance(state.get(k), torch.Tensor) and state[k].shape == shape)
        return 2 * same - len(set(state) ^ set(layout))

    return max(RELEASES, key=score)  # ties: the first listed


def identify(state: Mapping[str, Any], where: str = "checkpoint") -> Release:
    """The release whose layout ``state`` has exactly (names, shapes, finite float tensors).

    Every problem is a one-line :class:`ConfigError` naming the first offending key, what the
    file holds and which releases are supported.
    """
    if not state:
        raise ConfigError(f"{where}: the state dict holds no tensors")
    for key in state:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: key {key!r} is not a string; not a RUAS released checkpoint")
    if not any(key.startswith(_PREFIXES) for key in state):
        first = next(iter(state))
        ours = " (it looks like a nasflow state dict already)" if first.startswith("iem_cells.") else ""
        raise ConfigError(f"{where}: not a RUAS released checkpoint: none of its {len(state)} key(s) is an "
                          f"enhance_net./denoise_net./estimation. tensor (first key: '{first}'){ours}; supported: "
                          f"{_supported()}")
    release = _closest(state)
    layout = release_layout(release)
    context = f"; the file holds {_found(state)}, closest to the {release.name} layout; supported: {_supported()}"
    for key in state:
        if key not in layout:
            close = difflib.get_close_matches(key, list(layout), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}' (not in the released RUAS layout{hint}){context}")
    missing = [key for key in layout if key not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"{where}: missing key '{missing[0]}'{more} of the released RUAS layout{context}")
    for key, (_, shape) in layout.items():
        tensor = state[key]
        if not isinstance(tensor, torch.Tensor):
            raise ConfigError(f"{where}: {key}: expected a tensor, found {type(tensor).__name__}")
        if tensor.shape != shape:
            raise ConfigError(f"{where}: {key}: expected shape {_shape(shape)}, found {_shape(tensor.shape)} "
                              f"(the {release.title} layout)")
        if not tensor.is_floating_point():
            raise ConfigError(f"{where}: {key}: expected floating-point weights, found {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f"{where}: {key}: holds NaN or infinite values")
    return release


def check_released(state: Mapping[str, Any], where: str = "checkpoint") -> bool:
    """Check ``state`` against the released layouts (:func:`identify`); returns whether it holds an NRM."""
    return identify(state, where).has_nrm


def choose_modules(release: Release, file_name: str | None = None, module: str | None = None) -> tuple[bool, str]:
    """``(use_nrm, why)``: which modules an import runs, and why (for the command's note).

    ``module`` (``iem`` or ``iem+nrm``) wins; otherwise the authors' own choice: for a CVPR file,
    IEM only when it is named ``upe.pt`` or ``dark.pt`` (their ``test.py`` saves the IEM output for
    those), else IEM + NRM; the journal release runs its noise-gated NRM.
    """
    if module is not None and module not in MODULES:
        raise ConfigError(f"module must be one of {', '.join(MODULES)}, got {module!r}")
    if not release.has_nrm:
        if module == "iem+nrm":
            raise ConfigError(f"{file_name or 'checkpoint'}: --module iem+nrm: the file holds no NRM tensors "
                              f"(only the {len(release_layout(release))} IEM ones)")
        return False, "the file holds the IEM alone"
    if module is not None:
        what = "IEM + NRM" if module == "iem+nrm" else "the IEM alone"
        return module == "iem+nrm", f"{what}, as --module {module} asks"
    if release.variant == "journal":
        return True, "as the authors run the journal release: the NRM where the noise gate calls the image noisy"
    stem = Path(file_name).stem.lower() if file_name else ""
    if stem in IEM_ONLY_STEMS:
        return False, (f"the authors' test script runs {stem}.pt as the IEM alone (its NRM tensors are dropped; "
                       f"--module iem+nrm keeps them)")
    if stem == "lol":
        return True, "the authors' test script runs lol.pt as IEM + NRM"
    return True, (f"a CVPR file not named upe.pt or dark.pt runs as IEM + NRM (the authors run those two as the "
                  f"IEM alone: pass --module iem for that)")


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


# --- converting ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversion:
    """The compiled nasflow network's genotype and weights for a released checkpoint."""

    genotype: Genotype
    state_dict: dict[str, torch.Tensor]
    release: Release
    use_nrm: bool
    why: str  # why these modules (choose_modules)

    @property
    def variant(self) -> str:
        return self.release.variant


def load_released_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read and check a released RUAS checkpoint; returns its tensors under the released names.

    Accepts a bare state dict or one wrapped under ``state_dict``/``model``, with or without the
    ``module.`` prefix of DataParallel. Raises :class:`ConfigError` (one line) for a missing or
    unreadable file, a file that needs code to load, and unknown, missing or misshapen tensors.
    """
    path = Path(path)
    state = _unwrap(_load_file(path), str(path))
    identify(state, str(path))
    return state


def convert_released(state: Mapping[str, torch.Tensor], *, file_name: str | None = None,
                     module: str | None = None) -> Conversion:
    """The compiled nasflow network holding the released weights (:func:`choose_modules` picks its modules).

    Every tensor of the target network is filled from exactly one released tensor (float32,
    contiguous copies); the file's other tensors (an NRM left out) are dropped.
    """
    release = identify(state, file_name or "checkpoint")
    use_nrm, why = choose_modules(release, file_name, module)
    layout = _layout(use_nrm, release.variant)
    converted: dict[str, torch.Tensor] = {}
    for theirs, (ours, shape) in layout.items():
        if ours in converted or state[theirs].shape != shape:
            raise AssertionError(f"'{ours}' filled twice or misshapen")  # a bug, not a user error
        converted[ours] = state[theirs].detach().to(torch.float32).contiguous().clone()
    if len(converted) != len(_layout_items(use_nrm, release.variant)) or not set(layout) <= set(state):
        raise AssertionError("released RUAS tensors do not fill the network exactly once")  # a bug, not a user error
    return Conversion(release_genotype(use_nrm, release.variant), converted, release, use_nrm, why)


# --- writing the model file ----------------------------------------------------------------------
def run_config(use_nrm: bool, variant: str = "cvpr") -> dict[str, Any]:
    """The saved config: task ``ruas`` with the released sizes and synthetic data (valid without data)."""
    from nasflow.tasks.ruas.task import RUASOptions

    options = {"data": "synthetic", "use_nrm": use_nrm, "iem_stages": IEM_STAGES, "nrm_cells": NRM_CELLS,
               "nrm_channels": NRM_CHANNELS, "variant": variant}
    cfg = from_dict(RunConfig, {"task": "ruas", "task_options": options})
    from_dict(RUASOptions, cfg.task_options, "task_options")
    return to_dict(cfg)


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
    release: Release = CVPR
    why: str = ""  # why these modules (choose_modules)

    @property
    def modules(self) -> str:
        iem = f"IEM ({IEM_STAGES} stages)"
        if not self.use_nrm:
            return f"{iem} only"
        gate = " behind the noise gate" if self.release.variant == "journal" else ""
        return f"{iem} + NRM ({NRM_CELLS} cells){gate}"


def import_checkpoint(path: str | Path, out: str | Path, *, overwrite: bool = False,
                      module: str | None = None) -> ImportResult:
    """:func:`import_released`, returning what was written (for the command's report)."""
    path, out = Path(path), Path(out)
    if out.is_dir():
        raise ConfigError(f"output {out} is a folder; give the model file's name (e.g. {out / 'ruas-official.pt'})")
    if out.exists() and not overwrite:
        raise ConfigError(f"output {out} exists; refusing to overwrite it (pass --overwrite / overwrite=True)")
    if module is not None and module not in MODULES:
        raise ConfigError(f"module must be one of {', '.join(MODULES)}, got {module!r}")
    conversion = convert_released(load_released_state_dict(path), file_name=path.name, module=module)
    release, use_nrm = conversion.release, conversion.use_nrm
    sha = _sha256(path)
    saved = model_payload(conversion.state_dict, conversion.genotype.to_dict(), run_config(use_nrm, release.variant),
                          {"source": SOURCE, "file": path.name, "sha256": sha, "release": release.name,
                           "modules": "iem+nrm" if use_nrm else "iem"})
    rebuild(saved, "cpu", str(out))  # the file must load the way load_model reads it; check before writing anything
    save_model_file(saved, out)
    return ImportResult(out, use_nrm, sum(t.numel() for t in conversion.state_dict.values()), sha, release,
                        conversion.why)


def import_released(path: str | Path, out: str | Path, *, overwrite: bool = False, module: str | None = None) -> Path:
    """Convert the released checkpoint ``path`` into the nasflow model file ``out``; returns ``out``.

    ``module``: ``iem`` or ``iem+nrm`` instead of the authors' choice (:func:`choose_modules`).
    Refuses (:class:`ConfigError`) to overwrite an existing ``out`` unless ``overwrite``.
    """
    return import_checkpoint(path, out, overwrite=overwrite, module=module).path


# --- the CLI subcommand --------------------------------------------------------------------------
class ImportRuasCommand:
    """``nasflow import-ruas CKPT -o MODEL``: a released RUAS checkpoint as a nasflow model file."""

    name = "import-ruas"
    help = "convert a released RUAS checkpoint (CVPR 2021 or journal release) into a nasflow model file"
    description = """\
Convert one of the RUAS authors' released checkpoints (a plain state dict, legacy or current
torch format) into a nasflow model file: the released genotype, the weights under nasflow's
names and a config for task 'ruas'. The release is recognised by its tensor layout:

  CVPR 2021 (lol.pt, upe.pt, dark.pt; 76 tensors)  IEM + NRM, the paper genotype. All three
      files hold an NRM, but the authors run upe and dark as the IEM alone: a file named
      upe.pt or dark.pt is imported as the IEM alone, any other as IEM + NRM (the layout
      cannot tell the files apart, so rename or pass --module to choose). A file of only
      the 36 enhance_net tensors is the IEM alone.
  journal (lol.pt, mit.pt, darkface.pt; 98 tensors)  IEM, NRM and the noise gate that runs
      the NRM only on images it finds noisy (task option variant: journal; whole images,
      no tiles).

The checkpoint is read without running any code from it: a file that would need to is refused."""
    epilog = """\
examples:
  nasflow import-ruas lol.pt -o ruas-official-lol.pt
  nasflow enhance photos/ -o out/ --model ruas-official-lol.pt
  nasflow import-ruas upe.pt -o ruas-official-upe.pt               IEM only, as the authors run upe.pt
  nasflow import-ruas upe.pt -o upe-full.pt --module iem+nrm       keep upe.pt's NRM as well
  nasflow import-ruas journal/mit.pt -o ruas-journal-mit.pt        the journal release, noise gate included
  nasflow import-ruas dark.pt -o ruas-official-dark.pt --overwrite replace an existing model file"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ckpt", metavar="CKPT", help="released RUAS checkpoint (e.g. lol.pt, upe.pt, mit.pt)")
        parser.add_argument("-o", "--output", metavar="MODEL", required=True,
                            help="the nasflow model file to write (e.g. ruas-official-lol.pt)")
        parser.add_argument("--module", choices=MODULES, default=None,
                            help="run the IEM alone or IEM + NRM instead of the authors' choice (CVPR: IEM alone "
                                 "for upe.pt and dark.pt, else IEM + NRM; journal: its gated NRM)")
        parser.add_argument("--overwrite", action="store_true", help="replace MODEL if it exists")

    def run(self, args: argparse.Namespace) -> int:
        result = import_checkpoint(args.ckpt, args.output, overwrite=args.overwrite, module=args.module)
        print(f"wrote {result.path}: RUAS {result.modules}, {result.parameters:,} parameters, "
              f"from {Path(args.ckpt).name} ({result.release.name} release; sha256 {result.sha256})")
        print(f"nasflow: note: {Path(args.ckpt).name}: {result.why}", file=sys.stderr)
        return 0
