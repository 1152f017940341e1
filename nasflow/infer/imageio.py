"""Reading and writing users' images for ``nasflow enhance``.

Photos arrive in every form: palettes, CMYK JPEGs, 16-bit PNGs from raw converters, phone
pictures stored sideways with an EXIF orientation tag, GIFs, files with the wrong suffix,
truncated downloads, the odd decompression bomb. This module turns each into one plain form
(float32 RGB in [0, 1] plus an optional alpha plane) or refuses it with an :class:`ImageError`
that names the file, and it writes results atomically so that an interrupted run never leaves
half a file behind.

Two Pillow limits are worked around rather than inherited:

* Pillow decodes 16-bit RGB(A) and gray+alpha PNGs to 8 bits. Those PNGs go through
  :func:`_read_png16`, which feeds the image data to Pillow's own C inflate+unfilter decoder
  twice, once keeping the high byte of each sample and once the low byte, and joins them.
  Writing 16-bit PNGs uses the small encoder :func:`_encode_png16` (Pillow cannot write them).
* Pillow's decompression-bomb guard is a process-wide setting (``Image.MAX_IMAGE_PIXELS``).
  We leave it alone and apply our own per-call limit (``max_pixels``) from the header, before
  any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, Callable, Iterator, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from nasflow.atomic import write_atomic
from nasflow.errors import NasflowError

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest width*height :func:`read_image` decodes unless told otherwise (``--max-pixels``)."""

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)
"""Suffixes (lower case) that folder and glob inputs are filtered by; a file named explicitly
is read whatever its suffix, since the content decides the format."""

_WRITE_FORMATS = MappingProxyType(
    {
        "png": "PNG",
        "jpg": "JPEG",
        "jpeg": "JPEG",
        "tif": "TIFF",
        "tiff": "TIFF",
        "webp": "WEBP",
        "bmp": "BMP",
    }
)
_NO_ALPHA_FORMATS = frozenset({"JPEG", "BMP"})  # JPEG cannot; Pillow reads RGBA BMPs back as RGB
_QUALITY_FORMATS = frozenset({"JPEG", "WEBP"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG16_CHANNELS = MappingProxyType({0: 1, 4: 2, 2: 3, 6: 4})  # PNG colour type -> channels
_PNG16_COLOR_TYPES = MappingProxyType({c: t for t, c in _PNG16_CHANNELS.items()})
_IDAT_CHUNK_BYTES = 1 << 20
_ORIENTATION_TAG = 0x0112

# What decoders raise on truncated or corrupt data (Pillow wraps little of it).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

_SIGNATURES = (
    (b"\x89PNG", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


class ImageError(NasflowError):
    """An image file that cannot be read or written; prints as one line ``PATH: problem``."""

    def __init__(self, path: PathLike, problem: str) -> None:
        # Both parts in args, so the error survives pickling (e.g. from a DataLoader worker).
        super().__init__(os.fspath(path), problem)
        self.path = os.fspath(path)
        self.problem = problem

    def __str__(self) -> str:
        return re.sub(r"\s*[\r\n]+\s*", " ", f"{self.path}: {self.problem}").strip()


@dataclass
class LoadedImage:
    """An image in the one form the networks take, plus what the caller needs to write it back."""

    rgb: np.ndarray  # float32 HxWx3 in [0, 1], C-contiguous
    alpha: np.ndarray | None  # float32 HxW in [0, 1], or None when the source had no alpha
    bit_depth: int  # 8 or 16: the source's precision, to write the result at the same
    gray: bool  # the source was single-channel
    notes: tuple[str, ...] = ()  # one-line remarks on what was done to the pixels


class _UnsupportedMode(Exception):
    """A Pillow mode we cannot turn into RGB (e.g. LAB without a colour-management library)."""


@dataclass
class _Pixels:
    """Decoded planes before orientation and gray-to-RGB expansion."""

    color: np.ndarray  # float32, HxW (gray) or HxWx3
    alpha: np.ndarray | None
    bit_depth: int
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# reading


def read_image(path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode any image Pillow knows into float32 RGB in [0, 1], upright, first frame only.

    The format comes from the content, never the suffix. ``max_pixels`` bounds width*height
    (checked from the header, before decoding) so a tiny file cannot claim gigabytes;
    ``None`` disables the check. Anything unreadable raises :class:`ImageError`.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer or None, not {max_pixels!r}")
    path = Path(path)
    _require_regular_file(path)
    try:
        with open(path, "rb") as fp:
            return _read_open_file(fp, path, max_pixels)
    except MemoryError as exc:
        raise ImageError(path, "not enough memory to decode this image") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"refused as a possible decompression bomb ({exc})") from exc
    except OSError as exc:  # opening or reading the file itself
        raise ImageError(path, f"cannot read ({_reason(exc)})") from exc


def _require_regular_file(path: Path) -> None:
    """Refuse, with a clear reason, what is not a non-empty regular file (a FIFO would hang)."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ImageError(path, "no such file") from exc
    except OSError as exc:
        raise ImageError(path, f"cannot read ({_reason(exc)})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(path, "is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(path, "is not a regular file")
    if info.st_size == 0:
        raise ImageError(path, "is empty (0 bytes)")


def _read_open_file(fp: BinaryIO, path: Path, max_pixels: int | None) -> LoadedImage:
    """Identify lazily, check the size, decode, then make the result upright."""
    kind = _sniff(fp)
    try:
        image = _open_lazy(fp)
    except UnidentifiedImageError as exc:
        problem = (
            f"looks like a {kind} file but cannot be read (truncated or corrupt)"
            if kind
            else "is not an image (or not in a format Pillow can read)"
        )
        raise ImageError(path, problem) from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(path, f"cannot read the image header ({_reason(exc)})") from exc
    with image:
        _check_pixels(path, image.size, max_pixels)
        what = image.format or kind or "image"
        try:
            notes = _frame_notes(image)
            png16 = _png16_header(fp) if image.format == "PNG" else None
            if png16 is not None:
                pixels, orientation = _read_png16(fp, path, png16)
            else:
                pixels = _pixels_from_pillow(image)
                orientation = _orientation(image.getexif, pixels.notes)
        except _UnsupportedMode as exc:
            raise ImageError(path, f"{what} in an unsupported colour mode ({exc})") from exc
        except _DECODE_ERRORS as exc:
            problem = f"cannot decode {what} ({_reason(exc)}); truncated or corrupt?"
            raise ImageError(path, problem) from exc
    return _finish(pixels, orientation, notes)


def _sniff(fp: BinaryIO) -> str | None:
    """The format the magic bytes claim: to say 'a truncated PNG' rather than 'not an image'."""
    fp.seek(0)
    head = fp.read(16)
    fp.seek(0)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def _open_lazy(fp: BinaryIO) -> Image.Image:
    """``Image.open`` with our limit in place of Pillow's process-wide one.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and raises above twice that, reading a global we
    must not change; we silence the warning here and, when it raises, identify the file with
    the same plugin registry it uses but without its check, so that :func:`_check_pixels`
    alone decides.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(fp)
        except Image.DecompressionBombError:
            return _open_without_pillow_limit(fp)


def _open_without_pillow_limit(fp: BinaryIO) -> Image.Image:
    """Run Pillow's format plugins as ``Image.open`` does, minus its pixel check (still lazy)."""
    Image.init()
    fp.seek(0)
    prefix = fp.read(16)
    for name in list(Image.ID):
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept else True
        if verdict and not isinstance(verdict, str):
            fp.seek(0)
            with contextlib.suppress(SyntaxError, IndexError, TypeError, struct.error):
                return factory(fp, "")
    raise UnidentifiedImageError("cannot identify image file")


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse from the header alone what would take too much memory to decode."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(path, f"has no pixels ({width}x{height})")
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageError(
            path,
            f"{width}x{height} is {pixels:,} pixels, over the limit of {max_pixels:,} "
            "(a guard against decompression bombs); --max-pixels raises it",
        )


def _frame_notes(image: Image.Image) -> list[str]:
    """Say so when frames beyond the first (which is all we read) are ignored."""
    frames = getattr(image, "n_frames", 1)
    if not isinstance(frames, int) or frames <= 1:
        return []
    kind = "animated" if getattr(image, "is_animated", False) else "multi-frame"
    return [f"{kind} {image.format or 'image'}: used the first of {frames} frames"]


def _pixels_from_pillow(image: Image.Image) -> _Pixels:
    """Decode a Pillow image into float planes, whatever its mode."""
    narrowed = _narrowed_from_16_bits(image)  # the tile list is gone after load()
    source = image.format or "image"
    image.load()
    mode = image.mode
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I
        return _gray_from_ints(image)
    if mode == "F":
        return _gray_from_floats(image)
    image, notes = _to_8bit_mode(image)
    array = np.asarray(image)
    planes = array.astype(np.float32) / np.float32(255)
    has_alpha = image.mode in ("LA", "RGBA")
    color = planes[..., :-1] if has_alpha else planes
    if image.mode == "LA":
        color = color[..., 0]
    alpha = planes[..., -1] if has_alpha else None
    depth = 8
    if narrowed:
        depth = 16
        notes.append(f"16-bit {source} colour read at 8 bits (Pillow limit)")
    return _Pixels(color, alpha, depth, notes)


def _narrowed_from_16_bits(image: Image.Image) -> bool:
    """Whether Pillow will squeeze 16-bit colour samples into 8 bits (it has no 16-bit RGB
    mode); told by the decoder's raw mode, or for PPM by its maximum value."""
    if image.mode not in ("RGB", "RGBA"):
        return False
    tile = getattr(image, "tile", None) or []
    args = getattr(tile[0], "args", None) if tile else None
    args = args if isinstance(args, tuple) else (args,)
    rawmode = args[0] if args and isinstance(args[0], str) else ""
    maxval = args[1] if image.format == "PPM" and len(args) > 1 else 0
    return ";16" in rawmode or (isinstance(maxval, int) and maxval > 255)


def _to_8bit_mode(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Convert any 8-bit mode to L, LA, RGB or RGBA, keeping transparency as alpha."""
    mode = image.mode
    transparent = "transparency" in image.info
    if mode in ("L", "LA", "RGB", "RGBA") and not (transparent and mode in ("L", "RGB")):
        return image, []
    if mode in ("1", "L"):
        return image.convert("LA" if transparent else "L"), []
    if mode == "La":
        return image.convert("LA"), []
    if mode in ("P", "PA"):
        palette_alpha = image.palette is not None and image.palette.mode == "RGBA"
        has_alpha = transparent or mode == "PA" or palette_alpha
        return image.convert("RGBA" if has_alpha else "RGB"), []
    if mode in ("RGB", "RGBa"):
        return image.convert("RGBA"), []
    try:
        converted = image.convert("RGB")
    except ValueError as exc:
        raise _UnsupportedMode(mode) from exc
    notes = [] if mode == "RGBX" else [f"{mode} converted to RGB"]
    return converted, notes


def _gray_from_ints(image: Image.Image) -> _Pixels:
    """16-bit (or 32-bit integer) gray: scale by 65535, clipping what a 16-bit range can't hold."""
    values = np.asarray(image).astype(np.int32)  # I;16 in any byte order, or I
    notes = []
    if values.size and (values.min() < 0 or values.max() > 65535):
        notes.append("integer values outside 0..65535 clipped")
    key = image.info.get("transparency")
    alpha = (values != key).astype(np.float32) if isinstance(key, int) else None
    color = np.clip(values, 0, 65535).astype(np.float32) / np.float32(65535)
    return _Pixels(color, alpha, 16, notes)


def _gray_from_floats(image: Image.Image) -> _Pixels:
    """32-bit float gray (e.g. TIFF): taken as [0, 1], clipped with a note when it isn't."""
    values = np.asarray(image, dtype=np.float32)
    finite = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    notes = []
    if not np.array_equal(finite, values) or finite.min() < 0 or finite.max() > 1:
        notes.append("float values outside [0, 1] clipped")
    return _Pixels(np.clip(finite, 0.0, 1.0), None, 16, notes)


def _orientation(get_exif: Callable[[], Image.Exif], notes: list[str]) -> int:
    """The EXIF orientation (1..8); unreadable EXIF is noted and treated as upright."""
    try:
        value = get_exif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF raises anything; the pixels are still fine
        notes.append("unreadable EXIF data ignored")
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Make EXIF-rotated pixels upright; the same mapping as ``PIL.ImageOps.exif_transpose``.

    Done on arrays (not with Pillow) so that it also applies to 16-bit colour, which no Pillow
    image mode holds.
    """
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return array.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def _finish(pixels: _Pixels, orientation: int, notes: list[str]) -> LoadedImage:
    """Apply the orientation, expand gray to RGB, and package the result."""
    color, alpha = pixels.color, pixels.alpha
    all_notes = [*notes, *pixels.notes]
    if orientation != 1:
        color = _apply_orientation(color, orientation)
        alpha = None if alpha is None else _apply_orientation(alpha, orientation)
        all_notes.append(f"EXIF orientation {orientation} applied")
    gray = color.ndim == 2
    rgb = np.repeat(color[..., None], 3, axis=2) if gray else color
    return LoadedImage(
        rgb=np.ascontiguousarray(rgb, dtype=np.float32),
        alpha=None if alpha is None else np.ascontiguousarray(alpha, dtype=np.float32),
        bit_depth=pixels.bit_depth,
        gray=gray,
        notes=tuple(all_notes),
    )


# --------------------------------------------------------------------------------------------
# 16-bit PNG


@dataclass(frozen=True)
class _PngHeader:
    width: int
    height: int
    color_type: int
    interlace: int


def _png16_header(fp: BinaryIO) -> _PngHeader | None:
    """The IHDR of a 16-bit PNG that Pillow would narrow to 8 bits (colour or gray+alpha)."""
    position = fp.tell()  # Pillow reads on from where it left the file
    fp.seek(0)
    head = fp.read(33)
    fp.seek(position)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if depth != 16 or color_type not in (2, 4, 6):  # 16-bit plain gray Pillow reads as I;16
        return None
    return _PngHeader(width, height, color_type, interlace)


def _png_chunks(fp: BinaryIO) -> Iterator[tuple[bytes, bytes, bool]]:
    """Yield (type, data, crc_ok) up to IEND; a cut-off chunk ends the walk quietly, since the
    decoder then reports missing image data itself."""
    fp.seek(len(_PNG_SIGNATURE))
    while True:
        head = fp.read(8)
        if len(head) < 8:
            return
        length, kind = struct.unpack(">I4s", head)
        body, crc = fp.read(length), fp.read(4)
        if len(body) < length or len(crc) < 4:
            return
        yield kind, body, zlib.crc32(kind + body) == int.from_bytes(crc, "big")
        if kind == b"IEND":
            return


def _read_png16(fp: BinaryIO, path: Path, header: _PngHeader) -> tuple[_Pixels, int]:
    """Decode a 16-bit RGB, RGBA or gray+alpha PNG at full precision; return pixels, orientation.

    Pillow's "zip" decoder (inflate + PNG unfilter + Adam7, in C) only emits 8-bit samples
    here, but PNG filters work byte by byte, so decoding twice, with the raw mode that keeps
    the high byte and with the one that keeps the low byte, recovers every 16-bit sample
    exactly. Gray+alpha has 4 bytes a pixel, which the plain RGBA raw mode copies verbatim.
    """
    data, key, exif = [], None, None
    for kind, body, crc_ok in _png_chunks(fp):
        if kind == b"IDAT":
            if not crc_ok:
                raise ImageError(path, "corrupt PNG (bad checksum in the image data)")
            data.append(body)
        elif crc_ok and kind == b"tRNS":
            key = body
        elif crc_ok and kind == b"eXIf":
            exif = body
    samples = _inflate_png16(b"".join(data), header)
    pixels = _png16_planes(samples, header.color_type, key)
    orientation = _orientation(lambda: _parse_exif(exif), pixels.notes)
    return pixels, orientation


def _inflate_png16(data: bytes, header: _PngHeader) -> np.ndarray:
    """HxWxC uint16 samples from the concatenated IDAT data."""
    size, interlace = (header.width, header.height), header.interlace
    if header.color_type == 4:
        raw = np.asarray(Image.frombytes("RGBA", size, data, "zip", "RGBA", interlace))
        return (raw[..., 0::2].astype(np.uint16) << 8) | raw[..., 1::2]
    mode = "RGB" if header.color_type == 2 else "RGBA"
    high = np.asarray(Image.frombytes(mode, size, data, "zip", f"{mode};16B", interlace))
    low = np.asarray(Image.frombytes(mode, size, data, "zip", f"{mode};16L", interlace))
    return (high.astype(np.uint16) << 8) | low


def _png16_planes(samples: np.ndarray, color_type: int, key: bytes | None) -> _Pixels:
    """Split 16-bit samples into colour and alpha; a tRNS colour key becomes a binary alpha."""
    planes = samples.astype(np.float32) / np.float32(65535)
    if color_type == 4:
        return _Pixels(planes[..., 0], planes[..., 1], 16)
    if color_type == 6:
        return _Pixels(planes[..., :3], planes[..., 3], 16)
    alpha = None
    if key is not None and len(key) == 6:
        transparent = np.all(samples == np.array(struct.unpack(">3H", key), np.uint16), axis=2)
        alpha = (~transparent).astype(np.float32)
    return _Pixels(planes, alpha, 16)


def _parse_exif(data: bytes | None) -> Image.Exif:
    exif = Image.Exif()
    if data:
        exif.load(data)
    return exif


def _encode_png16(samples: np.ndarray) -> bytes:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA) from HxWxC uint16; Pillow can't write these."""
    height, width, channels = samples.shape
    rows = samples.astype(">u2").reshape(height, width * channels).view(np.uint8)
    compressor = zlib.compressobj(6)
    stream = b"".join(compressor.compress(b) for b in _filtered_rows(rows, 2 * channels))
    stream += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, _PNG16_COLOR_TYPES[channels], 0, 0, 0)
    idats = (
        _png_chunk(b"IDAT", stream[i : i + _IDAT_CHUNK_BYTES])
        for i in range(0, max(len(stream), 1), _IDAT_CHUNK_BYTES)
    )
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + b"".join(idats) + _png_chunk(b"IEND", b"")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _filtered_rows(rows: np.ndarray, bpp: int) -> Iterator[bytes]:
    """PNG-filter rows in blocks, each row with the filter that leaves the smallest residuals
    (the usual heuristic; it roughly halves 16-bit photo files versus no filtering)."""
    height, stride = rows.shape
    block = max(1, (1 << 20) // max(stride, 1))
    previous = np.zeros(stride, np.int16)
    for start in range(0, height, block):
        x = rows[start : start + block].astype(np.int16)
        up = np.concatenate([previous[None], x[:-1]])
        left, up_left = np.zeros_like(x), np.zeros_like(x)
        left[:, bpp:], up_left[:, bpp:] = x[:, :-bpp], up[:, :-bpp]
        candidates = np.stack(
            [x, x - left, x - up, x - ((left + up) >> 1), x - _paeth(left, up, up_left)]
        ).astype(np.uint8)
        cost = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)
        best = cost.argmin(axis=0)
        chosen = candidates[best, np.arange(len(x))]
        yield np.concatenate([best[:, None].astype(np.uint8), chosen], axis=1).tobytes()
        previous = x[-1]


def _paeth(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """The PNG Paeth predictor, elementwise."""
    to_left, to_up = np.abs(up - up_left), np.abs(left - up_left)
    to_up_left = np.abs(left + up - 2 * up_left)
    use_left = (to_left <= to_up) & (to_left <= to_up_left)
    return np.where(use_left, left, np.where(to_up <= to_up_left, up, up_left))


# --------------------------------------------------------------------------------------------
# writing


def write_image(
    path: PathLike,
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    format: str | None = None,  # noqa: A002 - the natural name for callers
    quality: int = 95,
    gray: bool = False,
) -> Path:
    """Write float RGB in [0, 1] (HxWx3; HxW or HxWx1 for gray) atomically; return the path.

    Values are clipped then rounded. ``gray`` writes one channel (the mean of the three), so a
    gray source stays gray. ``alpha`` (HxW) is kept where the format holds it (not JPEG/BMP).
    ``bit_depth=16`` gives a 16-bit PNG, or a 16-bit TIFF for gray without alpha; the other
    cases hold 8 bits and get 8. ``format`` overrides the suffix. Missing parent folders are
    created. Any failure to write raises :class:`ImageError` and leaves no temporary file and
    no partial target.
    """
    path = Path(path)
    pil_format = _write_format(path, format)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, not {quality!r}")
    planes = _planes_to_write(rgb, None if pil_format in _NO_ALPHA_FORMATS else alpha, gray)
    encode = _encoder(planes, pil_format, bit_depth, quality)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, encode)
    except OSError as exc:
        raise ImageError(path, f"cannot write ({_reason(exc)})") from exc
    return path


def _write_format(path: Path, format: str | None) -> str:  # noqa: A002
    """The Pillow format name for ``format`` or, without it, the path's suffix."""
    name = (format if format is not None else path.suffix).lower().lstrip(".")
    if name in _WRITE_FORMATS:
        return _WRITE_FORMATS[name]
    choices = ", ".join(sorted(_WRITE_FORMATS))
    what = f"format {format!r}" if format is not None else f"suffix {path.suffix!r}"
    raise ImageError(path, f"cannot write images with {what} (use one of: {choices})")


def _planes_to_write(rgb: np.ndarray, alpha: np.ndarray | None, gray: bool) -> np.ndarray:
    """Validate and stack the colour and alpha planes into HxWxC float32, C in 1..4."""
    color = np.asarray(rgb)
    if not np.issubdtype(color.dtype, np.floating):
        raise ValueError(
            f"write_image takes float values in [0, 1], not {color.dtype}; "
            "convert integer arrays with from_array first"
        )
    if color.ndim == 2:
        color = color[..., None]
    if color.ndim != 3 or color.shape[2] not in (1, 3) or 0 in color.shape:
        raise ValueError(f"rgb must be HxWx3 (or HxW / HxWx1 for gray), got shape {color.shape}")
    if gray and color.shape[2] == 3:
        color = _unit_float(color).mean(axis=2, keepdims=True)
    if alpha is None:
        return _unit_float(color)
    matte = np.asarray(alpha)
    if matte.ndim == 3 and matte.shape[2] == 1:
        matte = matte[..., 0]
    if matte.shape != color.shape[:2]:
        raise ValueError(f"alpha must be HxW = {color.shape[:2]}, got shape {matte.shape}")
    return _unit_float(np.concatenate([color, matte[..., None]], axis=2))


def _encoder(
    planes: np.ndarray, pil_format: str, bit_depth: int, quality: int
) -> Callable[[BinaryIO], None]:
    """A function writing the encoded image to a binary file object."""
    channels = planes.shape[2]
    if bit_depth == 16 and pil_format == "PNG":
        data = _encode_png16(to_uint(planes, 16))

        def write_png16(f: BinaryIO) -> None:
            f.write(data)

        return write_png16
    if bit_depth == 16 and pil_format == "TIFF" and channels == 1:
        image = Image.fromarray(to_uint(planes[..., 0], 16))  # mode I;16
    else:
        image = _pil_8bit(to_uint(planes, 8), pil_format)
    options = {"quality": quality} if pil_format in _QUALITY_FORMATS else {}
    return lambda f: image.save(f, format=pil_format, **options)


def _pil_8bit(samples: np.ndarray, pil_format: str) -> Image.Image:
    """An 8-bit Pillow image in a mode the format's writer accepts."""
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[samples.shape[2]]
    image = Image.fromarray(samples[..., 0] if mode == "L" else samples, mode)
    if pil_format == "WEBP" and mode in ("L", "LA"):
        image = image.convert("RGBA" if mode == "LA" else "RGB")
    return image


# --------------------------------------------------------------------------------------------
# inputs


def collect_inputs(
    inputs: Sequence[PathLike], *, recursive: bool = False
) -> list[tuple[Path, Path]]:
    """Expand files, folders and glob patterns into ``(path, relative_path)`` pairs.

    ``relative_path`` is what an output name should be based on: for a folder, the path inside
    it (so recursive runs can mirror sub-folders); for a file or glob match, the file name.
    Folders and globs yield files with an :data:`IMAGE_SUFFIXES` suffix, hidden ones skipped;
    a file named explicitly is taken whatever its suffix. Each file appears once, first
    occurrence wins. Two inputs can still share a file name; the caller decides what to do.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[tuple[Path, Path]] = []
    for spec in inputs:
        found.extend(_expand(os.fspath(spec), recursive))
    return _unique(found)


def _expand(spec: str, recursive: bool) -> list[tuple[Path, Path]]:
    """The image files one command-line input names."""
    path = Path(spec)
    if path.is_dir():
        return _folder_images(path, recursive)
    if path.exists():
        return [(path, Path(path.name))]
    if any(ch in spec for ch in "*?["):
        return _glob_images(spec, recursive)
    raise ImageError(spec, "no such file or folder")


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _folder_images(folder: Path, recursive: bool) -> list[tuple[Path, Path]]:
    """A folder's image files, sorted; sub-folders (not hidden, links not followed) if recursive.

    A folder without images gives nothing rather than an error: the caller sees the whole
    list and can say what to do about an empty one.
    """
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in files:
            if _is_image_name(name):
                path = Path(root) / name
                found.append((path, path.relative_to(folder)))
    return sorted(found, key=lambda item: item[1].parts)


def _glob_images(pattern: str, recursive: bool) -> list[tuple[Path, Path]]:
    """Image files matching a glob pattern, sorted; ``**`` spans folders only when recursive."""
    matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=recursive))]
    found = [(m, Path(m.name)) for m in matches if m.is_file() and _is_image_name(m.name)]
    if not found:
        raise ImageError(pattern, "matches no image files")
    return found


def _unique(found: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Drop repeats of the same file (however it was spelled), keeping the first."""
    seen: set[str] = set()
    unique = []
    for path, relative in found:
        key = os.path.normcase(os.path.realpath(path))
        if key not in seen:
            seen.add(key)
            unique.append((path, relative))
    return unique


# --------------------------------------------------------------------------------------------
# arrays (the Python API)


def to_uint(x: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float in [0, 1] to uint8 (8) or uint16 (16): NaN becomes 0, clip, then round."""
    top, dtype = _uint_range(bit_depth)
    return np.round(_unit_float(x) * np.float32(top)).astype(dtype)


def from_array(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int, bool]:
    """``(rgb, alpha, bit_depth, gray)`` from an HxW, HxWx1, HxWx3 or HxWx4 image array.

    uint8 is 8-bit, uint16 16-bit, and float16/32/64 (taken as [0, 1], clipped, NaN as 0)
    counts as 16-bit. ``rgb`` is float32 HxWx3, C-contiguous; ``alpha`` float32 HxW or None.
    """
    a = np.asarray(array)
    _check_layout(a)
    if a.dtype == np.uint8:
        planes, depth = a.astype(np.float32) / np.float32(255), 8
    elif a.dtype == np.uint16:
        planes, depth = a.astype(np.float32) / np.float32(65535), 16
    elif a.dtype in (np.float16, np.float32, np.float64):
        planes, depth = _unit_float(a), 16
    else:
        raise ValueError(
            f"unsupported image dtype {a.dtype}: use uint8, uint16 or float16/32/64 in [0, 1]"
        )
    gray = a.ndim == 2 or a.shape[2] == 1
    if gray:
        plane = planes if a.ndim == 2 else planes[..., 0]
        return np.repeat(plane[..., None], 3, axis=2), None, depth, True
    alpha = np.ascontiguousarray(planes[..., 3]) if a.shape[2] == 4 else None
    return np.ascontiguousarray(planes[..., :3]), alpha, depth, False


def to_array(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    like_dtype: np.dtype | type | str,
    gray: bool,
    *,
    keepdims: bool = False,
) -> np.ndarray:
    """The inverse of :func:`from_array`: the caller's dtype and channel layout.

    Gray gives HxW, or HxWx1 with ``keepdims`` (the mean of the channels, since a network may
    not keep them equal); otherwise HxWx3, or HxWx4 when ``alpha`` is given.
    """
    dtype = np.dtype(like_dtype)
    color = np.asarray(rgb)
    if color.ndim != 3 or color.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3, got shape {color.shape}")
    if gray:
        if alpha is not None:
            raise ValueError("a gray layout has no alpha channel; pass gray=False for HxWx4")
        out = color.astype(np.float32).mean(axis=2)
        out = out[..., None] if keepdims else out
    elif alpha is None:
        out = color
    else:
        matte = np.asarray(alpha)
        if matte.shape != color.shape[:2]:
            raise ValueError(f"alpha must be HxW = {color.shape[:2]}, got shape {matte.shape}")
        out = np.concatenate([color, matte[..., None]], axis=2)
    if dtype == np.uint8:
        return to_uint(out, 8)
    if dtype == np.uint16:
        return to_uint(out, 16)
    if dtype in (np.float16, np.float32, np.float64):
        return _unit_float(out).astype(dtype)
    raise ValueError(f"unsupported image dtype {dtype}: use uint8, uint16 or float16/32/64")


def _check_layout(a: np.ndarray) -> None:
    """Refuse shapes that are not one image (HxW, HxWx1, HxWx3, HxWx4)."""
    ok = a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))
    if not ok:
        raise ValueError(
            f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {a.shape} "
            "(for a batch, convert one image at a time)"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image array is empty (shape {a.shape})")


def _uint_range(bit_depth: int) -> tuple[int, type]:
    if bit_depth == 8:
        return 255, np.uint8
    if bit_depth == 16:
        return 65535, np.uint16
    raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth!r}")


def _unit_float(x: np.ndarray) -> np.ndarray:
    """float32 clipped to [0, 1], NaN as 0 and infinities as the nearer end."""
    values = np.asarray(x, dtype=np.float32)
    return np.clip(np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _reason(exc: BaseException) -> str:
    """The short human part of an exception (``strerror`` for OS errors)."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
