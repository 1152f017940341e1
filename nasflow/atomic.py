"""The one atomic writer: every file nasflow writes goes through a temp file beside the target,
is fsynced, then renamed over it, so a crash or kill at any moment leaves the old file or the new
one, never a truncated mix (rename is atomic within one folder on POSIX and Windows). On any
failure the temp file is removed.

Temp files are named ``.NAME.XXXXXXXX.tmp`` (hidden; NAME cut to 100 bytes so the temp name
stays within NAME_MAX). New files get mode 0o666 less the umask, as for any new file; with
``private=True`` 0o600 (checkpoints, exported models: they hold all the weights).

This module imports nothing of nasflow: every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

_NAME_BYTES = 100


def temp_beside(path: str | Path) -> Path:
    """A fresh hidden temp name in ``path``'s folder (not created)."""
    path = Path(path)
    prefix = path.name[:_NAME_BYTES]
    while len(os.fsencode(prefix)) > _NAME_BYTES:  # a long non-ASCII name
        prefix = prefix[:-1]
    return path.with_name(f".{prefix}.{secrets.token_hex(4)}.tmp")


def _create(temp: Path, private: bool) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return os.open(temp, flags, 0o600 if private else 0o666)


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None], *, private: bool = False,
                 before_replace: Callable[[], None] | None = None) -> Path:
    """Call ``write`` on a binary file that becomes ``path`` once complete and fsynced.

    ``before_replace`` runs after the new content is durable and before the rename (a checkpoint
    rotation keeps the previous file there). The parent folder must exist.
    """
    path = Path(path)
    temp = temp_beside(path)
    fd = _create(temp, private)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes, *, private: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda f: f.write(data), private=private)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_temp(path: str | Path, *, private: bool = False) -> Iterator[Path]:
    """For writers that need a file name (ONNX export): yields an empty temp file beside ``path``;
    when the block ends normally the temp is fsynced and renamed to ``path``, otherwise removed.
    The block may read the temp back to check it before it replaces anything."""
    path = Path(path)
    temp = temp_beside(path)
    os.close(_create(temp, private))
    try:
        yield temp
        with open(temp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
