"""Checkpoints: atomic writes, safe loads, rotation, the run-folder lock, and every RNG state
needed for bitwise resume.

Safety: every torch file is loaded with ``weights_only=True``, torch's restricted unpickler,
which builds tensors and plain containers only; a file that would construct any other object
(e.g. a crafted pickle calling ``os.system`` or ``open``) is refused before anything runs.

Durability: every file goes through :mod:`nasflow.atomic` (a temporary name, fsync, a rename over
its target), so a kill at any moment leaves the old file or the new one. A run keeps two checkpoints,
``checkpoints/last.ckpt`` and the one before it, ``checkpoints/prev.ckpt``; a resume tries them
newest first (:func:`load_latest`) and says which it used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from nasflow.atomic import temp_beside, write_atomic, write_text_atomic  # noqa: F401  (write_text_atomic: re-exported)
from nasflow.errors import CheckpointError, RunLockedError, StateDictMismatch

LAST, PREV = "last.ckpt", "prev.ckpt"
LOCK_NAME = ".nasflow.lock"


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through :func:`nasflow.atomic.write_atomic` (private, 0o600).

    A crash or kill at any moment leaves either the previous file or the new one, never a
    truncated mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda f: torch.save(obj, f), private=True)


def save_rotating(obj: Any, folder: str | Path) -> Path:
    """Save ``obj`` as ``folder/last.ckpt``, keeping the previous ``last.ckpt`` as ``prev.ckpt``.

    Order: the new file is complete on disk (temp + fsync) before anything moves; then the
    current ``last.ckpt`` becomes ``prev.ckpt`` by a hard link renamed into place (a copy where the
    file system has no hard links); then the new file is renamed to ``last.ckpt``. At every
    instant ``last.ckpt`` is a complete checkpoint (old or new) and ``prev.ckpt`` an older one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    last, prev = folder / LAST, folder / PREV

    def keep_previous() -> None:
        if last.is_file():
            _link_or_copy(last, prev)

    write_atomic(last, lambda f: torch.save(obj, f), private=True, before_replace=keep_previous)
    _fsync_dir(folder)
    return last


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (hard link, or a copy, under a temp name)."""
    with contextlib.suppress(OSError):
        if os.path.samefile(src, dst):  # already (a kill between the two renames of a rotation)
            return
    temp = temp_beside(dst)
    try:
        try:
            os.link(src, temp)
        except OSError:
            import shutil

            shutil.copyfile(src, temp)
        os.replace(temp, dst)
    finally:
        temp.unlink(missing_ok=True)  # rename of two links to one file does nothing and leaves temp


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not on Windows; best effort elsewhere
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)



def check_state_dict(own: Mapping[str, torch.Tensor], state: Any, where: str) -> None:
    """Refuse saved weights that do not fit a network, naming the first key or shape that differs.

    The one check for every saved state dict (a resumed checkpoint, a model file), raising
    :class:`StateDictMismatch`.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StateDictMismatch(f"{where}: the model state is not a mapping of tensors")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        first = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise StateDictMismatch(f"{where} does not match the network of this config ({len(missing)} missing, "
                                f"{len(unexpected)} unexpected tensors; first: {first}); was it written with "
                                "another config or genotype?")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise StateDictMismatch(f"{where}: '{key}' has shape {tuple(tensor.shape)}, the network of this "
                                    f"config needs {tuple(own[key].shape)}; was it written with another config or "
                                    "genotype?")


def load_state_checked(module: torch.nn.Module, state: Any, where: str) -> None:
    """``load_state_dict`` after :func:`check_state_dict` (one-line errors instead of torch's list)."""
    check_state_dict(module.state_dict(), state, where)
    module.load_state_dict(state)


def load_safe(path: str | Path) -> Any:
    """Load with ``weights_only=True`` onto the CPU; unreadable or refused files are user errors.

    Only tensors and plain data are ever built: a file naming any other object (a crafted
    pickle) raises :class:`CheckpointError` before that object is constructed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights only" in first.lower() or "unsupported global" in str(exc).lower():
            found = _unsupported_global(str(exc))
            raise CheckpointError(f"cannot load checkpoint {path}: refused, it would construct "
                                  f"{found or 'objects other than tensors and plain data'} when loaded "
                                  "(only tensors and plain data are ever loaded)") from None
        raise CheckpointError(f"cannot load checkpoint {path}: {first or 'not a torch file'}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". ")[0].rstrip(".")  # torch appends paragraphs of advice
        raise CheckpointError(f"cannot load checkpoint {path}: {first} (truncated or not a checkpoint?)") from None


def _unsupported_global(message: str) -> str | None:
    """The ``module.name`` torch's weights-only unpickler refused, from its message."""
    import re

    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


@dataclass
class Loaded:
    """A checkpoint loaded by :func:`load_latest`: its content, its file, and what was skipped."""

    state: Any
    path: Path
    skipped: list[str]  # "FILE: why" for every newer checkpoint that could not be used


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The checkpoints of a run's ``checkpoints/`` folder that exist, newest first."""
    folder = Path(folder)
    return [p for p in (folder / LAST, folder / PREV) if p.is_file()]


def load_latest(folder: str | Path, check: Callable[[Any, Path], None] | None = None) -> Loaded:
    """Load ``last.ckpt``, or ``prev.ckpt`` when the newer one is unreadable (or fails ``check``).

    ``check(state, path)`` may raise :class:`CheckpointError` to reject a loaded state (wrong
    structure). Raises :class:`CheckpointError` naming every file and why when none is usable.
    """
    files = checkpoint_files(folder)
    if not files:
        raise CheckpointError(f"no checkpoint in {folder}")
    skipped: list[str] = []
    for path in files:
        try:
            state = load_safe(path)
            if check is not None:
                check(state, path)
        except CheckpointError as exc:
            skipped.append(str(exc))
            continue
        return Loaded(state, path, skipped)
    raise CheckpointError("no usable checkpoint: " + "; ".join(skipped))


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA generator states, as weights_only-loadable data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the run-folder lock ------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a run folder: ``FOLDER/.nasflow.lock`` holding the owner's pid.

    On POSIX the file also carries an advisory ``flock``, which the kernel releases when the
    process dies however it dies; elsewhere the pid is checked for life. A lock whose owner is
    gone (killed, crashed) is stale: it is taken over, and :attr:`took_over` says from which pid.
    A live owner makes :meth:`acquire` raise :class:`RunLockedError` naming its pid.
    """

    def __init__(self, folder: Path, fd: int | None, took_over: int | None) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._fd = fd
        self.took_over = took_over  # pid of a dead owner whose stale lock was taken over

    @classmethod
    def acquire(cls, folder: str | Path) -> "RunLock":
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        try:
            import fcntl
        except ImportError:  # Windows: pid files only
            return cls._acquire_by_pid(folder, path)
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    owner = _read_pid(path)
                    raise RunLockedError(cls._locked_message(folder, owner)) from None
                return cls._acquire_by_pid(folder, path)  # a file system without flock
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the owner removed the file between our open and our lock: try again
        else:
            raise RunLockedError(cls._locked_message(folder, _read_pid(path)))
        previous = _read_pid(path)
        took_over = previous if previous is not None and previous != os.getpid() else None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        return cls(folder, fd, took_over)

    @classmethod
    def _acquire_by_pid(cls, folder: Path, path: Path) -> "RunLock":
        took_over = None
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _read_pid(path)
                if owner is not None and owner != os.getpid() and _pid_alive(owner):
                    raise RunLockedError(cls._locked_message(folder, owner)) from None
                took_over = owner
                path.unlink(missing_ok=True)
                continue
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            return cls(folder, None, took_over)
        raise RunLockedError(cls._locked_message(folder, _read_pid(path)))

    @staticmethod
    def _locked_message(folder: Path, owner: int | None) -> str:
        who = f"pid {owner}" if owner is not None else "another process"
        return (f"run folder {folder} is in use by another nasflow run ({who}; lock file {folder / LOCK_NAME}); "
                "wait for it to finish or choose another --out")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None and not self.path.exists():
            return
        with contextlib.suppress(OSError):
            if _read_pid(self.path) == os.getpid():
                self.path.unlink()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - no signal 0 there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
