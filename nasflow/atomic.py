"""Atomic text writes: a temp file beside the target, fsync, rename; a kill leaves old or new, never half."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a hidden temp file (removed on any failure)."""
    path = Path(path)
    temp = path.with_name(f".{path.name[:200]}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
