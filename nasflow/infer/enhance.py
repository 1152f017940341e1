"""``nasflow enhance``: a trained image-to-image model over files and folders.

Decoding, enhancing and encoding overlap: a reader thread decodes the next images while the
network runs and a writer thread encodes the previous result, each with a bounded queue, so a
folder runs at the pace of its slowest stage and memory does not grow with the folder.
Nothing is ever written over an input; existing outputs only with ``overwrite``; every file
is written under a temporary name and renamed (see :func:`nasflow.infer.imageio.write_image`).

A bad input file is reported and skipped; an output location that cannot take files (read-only,
full, no permission) stops the run at once (:attr:`EnhanceReport.stopped`), since every further
file would fail the same way; the files already written are complete.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from nasflow.errors import ConfigError, NasflowError, OutputError

OUTPUT_FORMATS = ("png", "jpg", "tif", "webp", "bmp", "same")
_SUFFIX = {"png": ".png", "jpg": ".jpg", "tif": ".tif", "webp": ".webp", "bmp": ".bmp"}


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes."""

    source: Path
    target: Path


@dataclass
class EnhanceReport:
    """What a folder run did, file by file."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None  # why the output location stopped the run (disk full, read-only, ...)

    @property
    def ok(self) -> bool:
        return not self.failed


def plan_jobs(inputs: Sequence[str], out_dir: str | Path, *, fmt: str = "png", recursive: bool = False,
              overwrite: bool = False) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Pair every input image with its output path; refusals are returned, not raised.

    Refused: an output that is one of the inputs (even with ``overwrite``), an existing output
    without ``overwrite``, and two inputs that would write the same output.
    """
    from nasflow.infer.imageio import collect_inputs

    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"-o {out_dir} exists and is not a folder")
    found = collect_inputs(list(inputs), recursive=recursive)
    if not found:
        raise ConfigError(f"no images found in {', '.join(inputs)} (looked for common image suffixes"
                          f"{'' if recursive else '; use --recursive for sub-folders'})")
    sources = {p.resolve() for p, _ in found}
    jobs: list[Job] = []
    refused: list[tuple[Path, str]] = []
    claimed: dict[Path, Path] = {}
    for path, relative in found:
        suffix = path.suffix if fmt == "same" else _SUFFIX[fmt]
        target = out_dir / relative.with_suffix(suffix)
        resolved = target.resolve()
        if resolved in sources:
            refused.append((path, f"its output {target} would overwrite an input; choose another -o or --format"))
        elif resolved in claimed:
            refused.append((path, f"{claimed[resolved]} already writes {target}"))
        elif target.exists() and not overwrite:
            refused.append((path, f"{target} exists; pass --overwrite to replace it"))
        else:
            claimed[resolved] = path
            jobs.append(Job(path, target))
    return jobs, refused


BACKEND_CACHE_LIMITS = {"LRU_CACHE_CAPACITY": "64", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}
"""Entries kept by PyTorch's oneDNN (mkldnn) convolution caches during ``nasflow enhance``.

Both caches key on the input shape and default to 1024 entries, each holding JIT code and, for
large inputs, buffers: over a folder of photos of many sizes the process grows by hundreds of
MiB before they fill (about 65 MiB over 1,000 small images, 320 MiB for one 1500x1300 photo).
64 entries keep every repeated shape (the tiles of a large image) cached, so speed is the same,
and memory stays flat. A value already in the environment wins.
"""


def bound_backend_caches() -> None:
    """Apply :data:`BACKEND_CACHE_LIMITS` (read by the backend at its first convolution)."""
    for name, value in BACKEND_CACHE_LIMITS.items():
        os.environ.setdefault(name, value)


FATAL_WRITE_ERRNOS = frozenset(
    code for code in (getattr(errno, name, None) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO"))
    if code is not None
)
"""Write failures that concern the output location, not one file: they stop a folder run."""


def check_output_folder(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and prove a file can be created in it; else one OutputError."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".nasflow-probe.{secrets.token_hex(4)}.tmp"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write into the output folder {out_dir} "
                          f"({exc.strerror or type(exc).__name__})") from None
    return out_dir


def _fatal_errno(exc: BaseException) -> int | None:
    """The errno of a write failure that concerns the whole output location, if it is one."""
    for candidate in (exc, getattr(exc, "__cause__", None)):
        code = getattr(candidate, "errno", None)
        if isinstance(code, int) and code in FATAL_WRITE_ERRNOS:
            return code
    return None


def _output_bit_depth(bit_depth: int, target: Path) -> int:
    return 16 if bit_depth == 16 and target.suffix.lower() in (".png", ".tif", ".tiff") else 8


def run_jobs(enhance_rgb: Callable[[np.ndarray], np.ndarray], jobs: Iterable[Job], *, max_pixels: int | None,
             progress: Callable[[Iterable[Job]], Iterable[Job]] | None = None, prefetch: int = 2) -> EnhanceReport:
    """Decode, enhance and encode every job; a bad file is reported and skipped, never fatal."""
    from nasflow.infer.imageio import read_image, write_image

    jobs = list(jobs)
    report = EnhanceReport()
    started = time.perf_counter()

    def read(job: Job):  # noqa: ANN202 - LoadedImage
        return read_image(job.source, max_pixels=max_pixels)

    def write(job: Job, rgb: np.ndarray, loaded) -> Path:  # noqa: ANN001
        job.target.parent.mkdir(parents=True, exist_ok=True)
        return write_image(job.target, rgb, alpha=loaded.alpha, bit_depth=_output_bit_depth(loaded.bit_depth, job.target),
                           gray=loaded.gray)  # a grayscale photo stays grayscale

    with ThreadPoolExecutor(1, thread_name_prefix="nasflow-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="nasflow-write") as writer:
        reads: deque[Future] = deque(reader.submit(read, job) for job in jobs[:prefetch])
        writes: deque[tuple[Job, Future]] = deque()
        iterator = progress(jobs) if progress is not None else jobs
        try:
            for i, job in enumerate(iterator):
                if report.stopped is not None:
                    break
                future = reads.popleft()
                if i + prefetch < len(jobs):
                    reads.append(reader.submit(read, jobs[i + prefetch]))
                try:
                    loaded = future.result()
                    report.notes.extend((job.source, note) for note in loaded.notes)
                    rgb = enhance_rgb(loaded.rgb)
                except NasflowError as exc:
                    report.failed.append((job.source, _reason(exc)))
                    continue
                except (OSError, ValueError, MemoryError) as exc:
                    report.failed.append((job.source, f"{type(exc).__name__}: {exc}"))
                    continue
                del future
                writes.append((job, writer.submit(write, job, rgb, loaded)))
                del rgb, loaded  # the writer holds them until it is done: memory stays flat
                while len(writes) > prefetch:
                    _collect(writes.popleft(), report)
            while writes:
                _collect(writes.popleft(), report)
        finally:
            for pending in reads:
                pending.cancel()
    report.seconds = time.perf_counter() - started
    return report


def _collect(item: tuple[Job, Future], report: EnhanceReport) -> None:
    job, future = item
    try:
        report.written.append(future.result())
    except (NasflowError, OSError, ValueError) as exc:
        code = _fatal_errno(exc)
        if code is not None:
            if report.stopped is None:
                report.stopped = f"cannot write {job.target}: {os.strerror(code)}"
            return
        report.failed.append((job.source, _reason(exc)))


def _reason(exc: BaseException) -> str:
    """The problem alone: the report already names the file (ImageError keeps it in ``problem``)."""
    return str(getattr(exc, "problem", None) or exc)
