"""Tests for nasflow.infer.imageio: every kind of input we promise to read, every refusal, atomic
writes, input collection and the array helpers. All images are generated here, tiny."""

from __future__ import annotations

import io
import os
import pickle
import stat
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from nasflow.infer import imageio
from nasflow.errors import NasflowError
from nasflow.infer.imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageError,
    LoadedImage,
    collect_inputs,
    from_array,
    read_image,
    to_array,
    to_uint,
    write_image,
)

RNG_SEED = 1234


# --------------------------------------------------------------------------------------------
# helpers: PNGs written by hand (as another tool would), to test what Pillow can't produce


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _filter_row(row: np.ndarray, prior: np.ndarray, bpp: int, kind: int) -> bytes:
    """One PNG scanline filtered with filter ``kind`` (0..4), computed from the raw bytes."""
    x = row.astype(np.int32)
    up = prior.astype(np.int32)
    left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
    up_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
    if kind == 0:
        out = x
    elif kind == 1:
        out = x - left
    elif kind == 2:
        out = x - up
    elif kind == 3:
        out = x - (left + up) // 2
    else:
        p = left + up - up_left
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
        out = x - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    return bytes([kind]) + (out % 256).astype(np.uint8).tobytes()


def _scanlines(samples: np.ndarray, first_filter: int = 0) -> bytes:
    """Filtered scanlines of HxWxC uint16 samples, cycling through all five filter types."""
    height, width, channels = samples.shape
    rows = samples.astype(">u2").reshape(height, width * channels).view(np.uint8)
    prior = np.zeros(rows.shape[1], np.uint8)
    out = []
    for y in range(height):
        out.append(_filter_row(rows[y], prior, 2 * channels, (first_filter + y) % 5))
        prior = rows[y]
    return b"".join(out)


_ADAM7 = (  # (x0, y0, dx, dy) of the seven interlace passes
    (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)
)


def png16_bytes(samples: np.ndarray, *, interlace: bool = False, extra: bytes = b"") -> bytes:
    """A 16-bit PNG of HxWxC uint16 samples (C: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA)."""
    height, width, channels = samples.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    if interlace:
        passes = [samples[y0::dy, x0::dx] for x0, y0, dx, dy in _ADAM7]
        raw = b"".join(_scanlines(p, i) for i, p in enumerate(passes) if p.size)
    else:
        raw = _scanlines(samples)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, int(interlace))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + extra
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def bomb_png(width: int, height: int) -> bytes:
    """A small, valid-looking 8-bit gray PNG whose header claims width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def random_u8(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).integers(0, 256, shape, dtype=np.uint8)


def random_u16(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).integers(0, 65536, shape, dtype=np.uint16)


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def assert_one_line_error(excinfo: pytest.ExceptionInfo[ImageError], path: Path | str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    assert str(path) in message
    assert isinstance(excinfo.value, NasflowError)
    return message


# --------------------------------------------------------------------------------------------
# reading: every supported kind


def test_rgb8_png_round_trip_is_exact(tmp_path: Path) -> None:
    samples = random_u8((7, 9, 3))
    rgb, alpha, depth, gray = from_array(samples)
    out = write_image(tmp_path / "a.png", rgb, bit_depth=depth)
    loaded = read_image(out)
    assert isinstance(loaded, LoadedImage)
    assert (loaded.bit_depth, loaded.gray, loaded.alpha, loaded.notes) == (8, False, None, ())
    assert loaded.rgb.dtype == np.float32 and loaded.rgb.flags.c_contiguous
    assert loaded.rgb.shape == (7, 9, 3)
    np.testing.assert_array_equal(to_uint(loaded.rgb, 8), samples)


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_png_written_by_another_tool_reads_exactly(
    tmp_path: Path, channels: int, interlace: bool
) -> None:
    samples = random_u16((13, 11, channels))
    path = tmp_path / "sixteen.png"
    path.write_bytes(png16_bytes(samples, interlace=interlace))
    loaded = read_image(path)
    assert loaded.bit_depth == 16
    assert loaded.gray == (channels == 2)
    color = samples[..., :1] if channels == 2 else samples[..., :3]
    np.testing.assert_array_equal(to_uint(loaded.rgb, 16), np.broadcast_to(color, (13, 11, 3)))
    if channels in (2, 4):
        np.testing.assert_array_equal(to_uint(loaded.alpha, 16), samples[..., -1])
    else:
        assert loaded.alpha is None


def test_pillow_narrows_16bit_rgb_png_which_is_why_we_decode_it_ourselves(tmp_path: Path) -> None:
    samples = random_u16((4, 5, 3))
    path = tmp_path / "rgb16.png"
    path.write_bytes(png16_bytes(samples))
    with Image.open(path) as im:  # documents the Pillow behaviour worked around
        narrowed = np.asarray(im)
    assert narrowed.dtype == np.uint8
    np.testing.assert_array_equal(narrowed, (samples >> 8).astype(np.uint8))


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_round_trips_through_read_and_write(tmp_path: Path, channels: int) -> None:
    samples = random_u16((10, 6, channels))
    source = tmp_path / "in.png"
    source.write_bytes(png16_bytes(samples))
    loaded = read_image(source)
    out = write_image(
        tmp_path / "out.png", loaded.rgb, alpha=loaded.alpha, bit_depth=loaded.bit_depth
    )
    header = out.read_bytes()[16:26]
    assert header[8] == 16  # bit depth in IHDR
    again = read_image(out)
    assert again.bit_depth == 16
    np.testing.assert_array_equal(to_uint(again.rgb, 16), samples[..., :3])
    if channels == 4:
        np.testing.assert_array_equal(to_uint(again.alpha, 16), samples[..., 3])
    with Image.open(out) as im:  # other readers accept our encoder's output
        np.testing.assert_array_equal(np.asarray(im)[..., :3], (samples[..., :3] >> 8))


def test_16bit_png_encoder_handles_smooth_and_large_rows(tmp_path: Path) -> None:
    # A gradient exercises every filter choice; a wide image spans several filter blocks.
    y, x = np.mgrid[0:120, 0:3000]
    samples = np.stack([x * 21, y * 500, (x + y) * 20], axis=2).astype(np.uint16)
    out = write_image(tmp_path / "wide.png", samples / 65535.0, bit_depth=16)
    np.testing.assert_array_equal(to_uint(read_image(out).rgb, 16), samples)
    assert out.stat().st_size < samples.nbytes // 4


def test_16bit_rgb_png_colour_key_becomes_alpha(tmp_path: Path) -> None:
    samples = random_u16((3, 4, 3))
    samples[1, 2] = (1, 2, 3)
    path = tmp_path / "key.png"
    path.write_bytes(png16_bytes(samples, extra=_chunk(b"tRNS", struct.pack(">3H", 1, 2, 3))))
    loaded = read_image(path)
    expected = np.ones((3, 4), np.float32)
    expected[1, 2] = 0
    np.testing.assert_array_equal(loaded.alpha, expected)


def test_gray16_png_reads_and_writes_at_16_bits(tmp_path: Path) -> None:
    samples = random_u16((6, 5))
    path = tmp_path / "gray16.png"
    Image.fromarray(samples).save(path)
    loaded = read_image(path)
    assert (loaded.bit_depth, loaded.gray, loaded.alpha) == (16, True, None)
    np.testing.assert_array_equal(to_uint(loaded.rgb[..., 0], 16), samples)
    out = write_image(tmp_path / "out.png", loaded.rgb[..., 0], bit_depth=16)
    with Image.open(out) as im:
        assert im.mode.startswith("I;16")
        np.testing.assert_array_equal(np.asarray(im), samples)


def test_gray16_tiff_round_trip(tmp_path: Path) -> None:
    samples = random_u16((4, 7))
    out = write_image(tmp_path / "g.tif", samples / 65535.0, bit_depth=16)
    loaded = read_image(out)
    assert loaded.bit_depth == 16 and loaded.gray
    np.testing.assert_array_equal(to_uint(loaded.rgb[..., 0], 16), samples)


def test_rgba_keeps_alpha(tmp_path: Path) -> None:
    samples = random_u8((5, 6, 4))
    rgb, alpha, _, _ = from_array(samples)
    for name in ("a.png", "a.tif", "a.webp"):
        quality = {"quality": 100} if name.endswith("webp") else {}
        loaded = read_image(write_image(tmp_path / name, rgb, alpha=alpha, **quality))
        assert loaded.alpha is not None and loaded.alpha.shape == (5, 6)
        if not name.endswith("webp"):  # lossy WebP keeps alpha but not exact colours
            np.testing.assert_array_equal(to_uint(loaded.alpha, 8), samples[..., 3])
            np.testing.assert_array_equal(to_uint(loaded.rgb, 8), samples[..., :3])


def test_gray_and_gray_alpha(tmp_path: Path) -> None:
    gray = random_u8((4, 3))
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    loaded = read_image(tmp_path / "l.png")
    assert loaded.gray and loaded.alpha is None and loaded.bit_depth == 8
    for c in range(3):
        np.testing.assert_array_equal(to_uint(loaded.rgb[..., c], 8), gray)
    la = np.stack([gray, 255 - gray], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    loaded = read_image(tmp_path / "la.png")
    assert loaded.gray
    np.testing.assert_array_equal(to_uint(loaded.alpha, 8), 255 - gray)


def test_bilevel_image_reads_as_gray(tmp_path: Path) -> None:
    Image.new("1", (3, 2), 1).save(tmp_path / "b.png")
    loaded = read_image(tmp_path / "b.png")
    assert loaded.gray and np.all(loaded.rgb == 1)


def _palette_image() -> Image.Image:
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putdata([0, 1, 2, 0, 1, 1, 2, 2])
    return im


def test_palette_image(tmp_path: Path) -> None:
    _palette_image().save(tmp_path / "p.png")
    loaded = read_image(tmp_path / "p.png")
    assert loaded.alpha is None and not loaded.gray
    first_row = to_uint(loaded.rgb[0, :3], 8)
    np.testing.assert_array_equal(first_row, [[255, 0, 0], [0, 255, 0], [0, 0, 255]])


def test_palette_with_transparency_gives_alpha(tmp_path: Path) -> None:
    _palette_image().save(tmp_path / "p.png", transparency=1)
    loaded = read_image(tmp_path / "p.png")
    assert loaded.alpha is not None
    np.testing.assert_array_equal(loaded.alpha, [[1, 0, 1, 1], [0, 0, 1, 1]])


def test_rgb_png_with_colour_key_gives_alpha(tmp_path: Path) -> None:
    samples = np.zeros((2, 2, 3), np.uint8)
    samples[0, 0] = (9, 9, 9)
    Image.fromarray(samples).save(tmp_path / "k.png", transparency=(9, 9, 9))
    loaded = read_image(tmp_path / "k.png")
    np.testing.assert_array_equal(loaded.alpha, [[0, 1], [1, 1]])


def test_cmyk_jpeg_loads_as_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red
    loaded = read_image(tmp_path / "c.jpg")
    assert loaded.rgb.shape == (6, 8, 3)
    assert "CMYK converted to RGB" in loaded.notes
    red = to_uint(loaded.rgb[3, 4], 8).astype(int)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_animated_gif_gives_first_frame_and_a_note(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (5, 4), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    loaded = read_image(tmp_path / "anim.gif")
    assert loaded.notes == ("animated GIF: used the first of 3 frames",)
    np.testing.assert_array_equal(to_uint(loaded.rgb, 8)[0, 0], [255, 0, 0])


def test_float_tiff_is_clipped_with_a_note(tmp_path: Path) -> None:
    values = np.array([[0.25, 0.5], [-1.0, 3.0]], np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    loaded = read_image(tmp_path / "f.tif")
    assert loaded.gray and loaded.bit_depth == 16
    np.testing.assert_allclose(loaded.rgb[..., 0], [[0.25, 0.5], [0.0, 1.0]])
    assert loaded.notes == ("float values outside [0, 1] clipped",)


def test_16bit_ppm_is_read_at_8_bits_with_a_note(tmp_path: Path) -> None:
    # Pillow has no 16-bit RGB mode; outside PNG we say so rather than decode it ourselves.
    samples = random_u16((3, 4, 3))
    (tmp_path / "x.ppm").write_bytes(b"P6 4 3 65535\n" + samples.astype(">u2").tobytes())
    gray = random_u16((3, 4))
    (tmp_path / "x.pgm").write_bytes(b"P5 4 3 65535\n" + gray.astype(">u2").tobytes())
    loaded = read_image(tmp_path / "x.ppm")
    assert loaded.bit_depth == 16
    assert loaded.notes == ("16-bit PPM colour read at 8 bits (Pillow limit)",)
    np.testing.assert_allclose(loaded.rgb, samples / 65535, atol=1 / 255)
    loaded = read_image(tmp_path / "x.pgm")  # 16-bit gray is kept exactly
    assert loaded.bit_depth == 16 and loaded.notes == ()
    np.testing.assert_array_equal(to_uint(loaded.rgb[..., 0], 16), gray)


def _marked_image(width: int = 40, height: int = 20) -> np.ndarray:
    """Blue, with a red block at the stored top-left corner."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[...] = (0, 0, 255)
    pixels[:8, :8] = (255, 0, 0)
    return pixels


@pytest.mark.parametrize(
    ("orientation", "shape", "red_corner"),
    [
        (3, (20, 40), (-1, -1)),  # rotated 180: red ends bottom-right
        (6, (40, 20), (0, -1)),  # rotate 90 clockwise to view: red ends top-right
        (8, (40, 20), (-1, 0)),  # rotate 90 counter-clockwise: red ends bottom-left
    ],
)
def test_exif_orientation_in_jpeg(
    tmp_path: Path, orientation: int, shape: tuple[int, int], red_corner: tuple[int, int]
) -> None:
    im = Image.fromarray(_marked_image())
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    loaded = read_image(tmp_path / "o.jpg")
    assert loaded.rgb.shape == (*shape, 3)
    assert loaded.rgb.flags.c_contiguous
    assert f"EXIF orientation {orientation} applied" in loaded.notes
    red = to_uint(loaded.rgb[red_corner], 8).astype(int)
    assert red[0] > 200 and red[2] < 60
    blue = to_uint(loaded.rgb[shape[0] // 2, shape[1] // 2], 8).astype(int)
    assert blue[2] > 200 and blue[0] < 60


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pillow_exif_transpose(tmp_path: Path, orientation: int) -> None:
    samples = random_u8((5, 7, 4))
    im = Image.fromarray(samples, "RGBA")
    im.save(tmp_path / "o.png", exif=exif_bytes(orientation))
    with Image.open(tmp_path / "o.png") as reference:
        expected = np.asarray(ImageOps.exif_transpose(reference))
    loaded = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(to_uint(loaded.rgb, 8), expected[..., :3])
    np.testing.assert_array_equal(to_uint(loaded.alpha, 8), expected[..., 3])
    assert (f"EXIF orientation {orientation} applied" in loaded.notes) == (orientation != 1)


def test_orientation_applies_to_16bit_png(tmp_path: Path) -> None:
    samples = random_u16((3, 5, 3))
    path = tmp_path / "o16.png"
    path.write_bytes(png16_bytes(samples, extra=_chunk(b"eXIf", exif_bytes(6))))
    loaded = read_image(path)
    np.testing.assert_array_equal(to_uint(loaded.rgb, 16), np.rot90(samples, k=-1))
    assert loaded.notes == ("EXIF orientation 6 applied",)


def test_format_comes_from_content_not_suffix(tmp_path: Path) -> None:
    Image.fromarray(_marked_image()).save(tmp_path / "really_a_jpeg.png", format="JPEG")
    loaded = read_image(tmp_path / "really_a_jpeg.png")
    assert loaded.rgb.shape == (20, 40, 3)


def test_read_accepts_str_paths(tmp_path: Path) -> None:
    Image.new("RGB", (2, 2)).save(tmp_path / "s.bmp")
    assert read_image(str(tmp_path / "s.bmp")).rgb.shape == (2, 2, 3)


# --------------------------------------------------------------------------------------------
# reading: refusals


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(random_u8((64, 64, 3))).save(buffer, "JPEG")
    return buffer.getvalue()


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(random_u8((64, 64, 3))).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.png", b"", "empty"),
        ("noise.png", np.random.default_rng(0).bytes(500), "not an image"),
        ("text.jpg", b"hello, this is not a picture\n", "not an image"),
        ("cut_header.png", _png_bytes()[:40], "looks like a PNG"),
        ("cut_data.png", _png_bytes()[: len(_png_bytes()) // 2], "cannot decode PNG"),
        ("cut.jpg", _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "cannot decode JPEG"),
        ("cut16.png", png16_bytes(random_u16((20, 20, 3)))[:300], "cannot decode PNG"),
    ],
)
def test_unreadable_files_are_refused_in_one_line(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError) as excinfo:
        read_image(path)
    assert problem in assert_one_line_error(excinfo, path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_16bit_png_checksum_is_refused(tmp_path: Path) -> None:
    data = bytearray(png16_bytes(random_u16((4, 4, 3))))
    data[60] ^= 0xFF  # inside the IDAT data
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="checksum"):
        read_image(path)


def test_missing_file_and_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as excinfo:
        read_image(tmp_path / "nope.png")
    assert "no such file" in assert_one_line_error(excinfo, tmp_path / "nope.png")
    with pytest.raises(ImageError) as excinfo:
        read_image(tmp_path)
    assert "folder" in assert_one_line_error(excinfo, tmp_path)


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(50_000, 50_000))
    assert path.stat().st_size < 1000
    start = time.perf_counter()
    with pytest.raises(ImageError) as excinfo:
        read_image(path)
    assert time.perf_counter() - start < 1.0  # refused before 2.5 GB were allocated
    message = assert_one_line_error(excinfo, path)
    assert "50000x50000" in message and "2,500,000,000" in message
    assert f"{DEFAULT_MAX_PIXELS:,}" in message and "--max-pixels" in message


def test_bomb_header_is_read_lazily_past_pillows_own_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(50_000, 50_000))
    with open(path, "rb") as fp, imageio._open_lazy(fp) as im:
        assert im.size == (50_000, 50_000)
    # A higher --max-pixels (or None) lets it through to decoding; not run here (2.5 GB).
    imageio._check_pixels(path, im.size, 3_000_000_000)
    imageio._check_pixels(path, im.size, None)
    with pytest.raises(ImageError, match="over the limit of 2,499,999,999"):
        imageio._check_pixels(path, im.size, 2_499_999_999)


def test_our_limit_replaces_pillows_warning(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(bomb_png(10_001, 10_000))  # over ours, inside Pillow's warning band
    limit_before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="100,010,000 pixels"):
            read_image(path)
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_max_pixels_limits_and_none_disables(tmp_path: Path) -> None:
    Image.new("RGB", (30, 20)).save(tmp_path / "n.png")
    with pytest.raises(ImageError, match="30x20 is 600 pixels, over the limit of 599"):
        read_image(tmp_path / "n.png", max_pixels=599)
    assert read_image(tmp_path / "n.png", max_pixels=600).rgb.shape == (20, 30, 3)
    assert read_image(tmp_path / "n.png", max_pixels=None).rgb.shape == (20, 30, 3)
    with pytest.raises(ValueError):
        read_image(tmp_path / "n.png", max_pixels=0)


def test_image_error_pickles() -> None:
    error = ImageError("a/b.png", "is empty (0 bytes)")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "a/b.png: is empty (0 bytes)"
    assert again.path == "a/b.png" and again.problem == "is empty (0 bytes)"


def test_image_error_is_one_line_even_for_odd_names() -> None:
    assert str(ImageError("we\nird.png", "bad\r\nthing")) == "we ird.png: bad thing"


# --------------------------------------------------------------------------------------------
# writing


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_rounds_not_truncates_and_clips(tmp_path: Path) -> None:
    rgb = np.array([[[254.6 / 255, -0.5, 7.0], [np.nan, 0.5 / 255 + 1e-4, 1.0]]])
    out = write_image(tmp_path / "r.png", rgb)
    with Image.open(out) as im:
        np.testing.assert_array_equal(np.asarray(im), [[[255, 0, 255], [0, 1, 255]]])


def test_jpeg_drops_alpha_and_16_bits_fall_back_to_8(tmp_path: Path) -> None:
    rgb, alpha, _, _ = from_array(random_u8((8, 8, 4)))
    out = write_image(tmp_path / "x.jpg", rgb, alpha=alpha, bit_depth=16, quality=90)
    with Image.open(out) as im:
        assert (im.format, im.mode) == ("JPEG", "RGB")
    loaded = read_image(out)
    assert loaded.alpha is None and loaded.bit_depth == 8


@pytest.mark.parametrize(
    ("fmt", "pil"),
    [("png", "PNG"), ("jpeg", "JPEG"), ("tiff", "TIFF"), ("webp", "WEBP"), ("bmp", "BMP")],
)
def test_format_argument_overrides_suffix(tmp_path: Path, fmt: str, pil: str) -> None:
    out = write_image(tmp_path / "result.data", np.full((3, 4, 3), 0.5), format=fmt)
    with Image.open(out) as im:
        assert im.format == pil and im.size == (4, 3)


def test_gray_writes_single_channel(tmp_path: Path) -> None:
    out = write_image(tmp_path / "g.png", np.full((3, 4, 1), 0.5))
    with Image.open(out) as im:
        assert im.mode == "L"
    rgb = np.zeros((3, 4, 3))
    rgb[..., 0] = 0.6  # channels a network left unequal are averaged
    for name, depth, mode in (("g8.png", 8, "L"), ("g16.png", 16, "I;16"), ("g16.tif", 16, "I;16")):
        out = write_image(tmp_path / name, rgb, bit_depth=depth, gray=True)
        with Image.open(out) as im:
            assert im.mode.startswith(mode)
        loaded = read_image(out)
        assert loaded.gray and loaded.bit_depth == depth
        np.testing.assert_allclose(loaded.rgb, 0.2, atol=1 / 255)
    out = write_image(tmp_path / "ga.png", rgb, alpha=np.full((3, 4), 0.5), gray=True, bit_depth=16)
    loaded = read_image(out)
    assert loaded.gray and loaded.alpha is not None and loaded.bit_depth == 16
    alpha = np.ones((3, 4))
    alpha[0, 0] = 0  # libwebp drops an alpha plane that is fully opaque
    out = write_image(tmp_path / "g.webp", np.full((3, 4), 0.5), alpha=alpha)
    assert read_image(out).alpha is not None


def test_unknown_suffix_and_bad_arguments(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3))
    with pytest.raises(ImageError, match="suffix '.xyz'"):
        write_image(tmp_path / "a.xyz", rgb)
    with pytest.raises(ImageError, match="format 'gif'"):
        write_image(tmp_path / "a.png", rgb, format="gif")
    with pytest.raises(ValueError, match="bit_depth"):
        write_image(tmp_path / "a.png", rgb, bit_depth=12)
    with pytest.raises(ValueError, match="float"):
        write_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="HxWx3"):
        write_image(tmp_path / "a.png", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="alpha"):
        write_image(tmp_path / "a.png", rgb, alpha=np.zeros((3, 2)))
    assert _files(tmp_path) == []


def test_write_creates_parent_folders_and_uses_umask_permissions(tmp_path: Path) -> None:
    out = write_image(tmp_path / "sub" / "deeper" / "a.png", np.zeros((2, 2, 3)))
    assert out.is_file()
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_leaves_no_temp_file_and_no_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imageio.os, failing, fail)
    with pytest.raises(ImageError) as excinfo:
        write_image(tmp_path / "out.png", np.zeros((4, 4, 3)))
    message = assert_one_line_error(excinfo, tmp_path / "out.png")
    assert "No space left on device" in message
    assert _files(tmp_path) == []


def test_failed_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")

    def fail(*args: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(imageio.os, "replace", fail)
    with pytest.raises(RuntimeError):
        write_image(target, np.zeros((4, 4, 3)))
    assert target.read_bytes() == b"previous"
    assert _files(tmp_path) == ["out.png"]


def test_temp_file_is_hidden_beside_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    real_replace = os.replace

    def spy(source: str | Path, target: str | Path) -> None:
        seen.append(Path(source))
        real_replace(source, target)

    monkeypatch.setattr(imageio.os, "replace", spy)
    write_image(tmp_path / "out.png", np.zeros((2, 2, 3)))
    (temp,) = seen
    assert temp.parent == tmp_path and temp.name.startswith(".") and temp.name.endswith(".tmp")
    assert _files(tmp_path) == ["out.png"]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions"
)
def test_read_only_folder_gives_image_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ImageError) as excinfo:
            write_image(folder / "out.png", np.zeros((2, 2, 3)))
        assert "cannot write" in assert_one_line_error(excinfo, folder / "out.png")
    finally:
        folder.chmod(0o755)


def test_permission_denied_gives_image_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same path as the read-only folder test, reachable when running as root.
    def deny(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imageio.os, "open", deny)
    with pytest.raises(ImageError, match="cannot write \\(Permission denied\\)"):
        write_image(tmp_path / "out.png", np.zeros((2, 2, 3)))


# --------------------------------------------------------------------------------------------
# collecting inputs


def _touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1, 1)).save(path, format="PNG")
    return path


@pytest.fixture
def photo_tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in ("b.png", "a.JPG", "c.webp", "sub/d.png", "sub/deeper/e.tif", ".hidden/f.png"):
        _touch_image(root / name)
    (root / "notes.txt").write_text("not an image")
    (root / ".g.png").write_bytes(b"")
    return root


def test_folder_lists_its_images_sorted(photo_tree: Path) -> None:
    found = collect_inputs([str(photo_tree)])
    assert [rel.as_posix() for _, rel in found] == ["a.JPG", "b.png", "c.webp"]
    assert all(path == photo_tree / rel for path, rel in found)


def test_recursive_folder_keeps_the_sub_folder_structure(photo_tree: Path) -> None:
    found = collect_inputs([str(photo_tree)], recursive=True)
    assert [rel.as_posix() for _, rel in found] == [
        "a.JPG",
        "b.png",
        "c.webp",
        "sub/d.png",
        "sub/deeper/e.tif",
    ]


def test_glob_patterns(photo_tree: Path) -> None:
    found = collect_inputs([str(photo_tree / "*.png")])
    assert [(p.name, rel.as_posix()) for p, rel in found] == [("b.png", "b.png")]
    found = collect_inputs([str(photo_tree / "**" / "*.png")], recursive=True)
    assert [rel.as_posix() for _, rel in found] == ["b.png", "d.png"]
    with pytest.raises(ImageError) as excinfo:
        collect_inputs([str(photo_tree / "*.gif")])
    assert "matches no image files" in assert_one_line_error(excinfo, photo_tree / "*.gif")


def test_files_missing_paths_and_duplicates(photo_tree: Path) -> None:
    odd = photo_tree / "notes.txt"
    again = os.fspath(photo_tree / "sub" / ".." / "b.png")
    found = collect_inputs([str(photo_tree / "b.png"), str(odd), str(photo_tree), again])
    assert [rel.as_posix() for _, rel in found] == ["b.png", "notes.txt", "a.JPG", "c.webp"]
    missing = photo_tree / "missing.png"
    with pytest.raises(ImageError) as excinfo:
        collect_inputs([str(missing)])
    assert "no such file or folder" in assert_one_line_error(excinfo, missing)


def test_folder_without_images_gives_nothing(tmp_path: Path) -> None:
    _touch_image(tmp_path / "only_sub" / "inner" / "x.png")
    assert collect_inputs([str(tmp_path / "only_sub")]) == []
    assert len(collect_inputs([tmp_path / "only_sub"], recursive=True)) == 1


def test_names_with_spaces_and_non_ascii_characters(tmp_path: Path) -> None:
    root = tmp_path / "Ferien Fotos ä"
    image = _touch_image(root / "Straße 1 фото.png")
    _touch_image(root / "日本 sub" / "写真 2.jpeg")
    found = collect_inputs([str(root)], recursive=True)
    names = [rel.as_posix() for _, rel in found]
    assert names == ["Straße 1 фото.png", "日本 sub/写真 2.jpeg"]
    assert collect_inputs([str(root / "Straße*")]) == [(image, Path(image.name))]
    assert read_image(found[1][0]).rgb.shape == (1, 1, 3)


def test_a_single_string_is_one_input(photo_tree: Path) -> None:
    found = collect_inputs(str(photo_tree / "b.png"))  # type: ignore[arg-type]
    assert found == [(photo_tree / "b.png", Path("b.png"))]


def test_suffix_set() -> None:
    expected = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
    assert expected == IMAGE_SUFFIXES


# --------------------------------------------------------------------------------------------
# array helpers


_LAYOUTS = [(6, 5), (6, 5, 1), (6, 5, 3), (6, 5, 4)]


@pytest.mark.parametrize("shape", _LAYOUTS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32, np.float64])
def test_from_array_to_array_round_trip(shape: tuple[int, ...], dtype: type) -> None:
    if np.issubdtype(dtype, np.integer):
        array = np.random.default_rng(0).integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    else:
        array = np.random.default_rng(0).random(shape).astype(dtype)
    rgb, alpha, depth, gray = from_array(array)
    assert rgb.shape == (6, 5, 3) and rgb.dtype == np.float32 and rgb.flags.c_contiguous
    assert gray == (len(shape) == 2 or shape[2] == 1)
    assert (alpha is not None) == (len(shape) == 3 and shape[2] == 4)
    assert depth == (8 if dtype == np.uint8 else 16)
    back = to_array(rgb, alpha, array.dtype, gray, keepdims=len(shape) == 3)
    assert back.dtype == array.dtype and back.shape == array.shape
    if np.issubdtype(dtype, np.integer):
        np.testing.assert_array_equal(back, array)
    else:
        np.testing.assert_allclose(back, array, atol=1e-3)


def test_float_arrays_are_clipped() -> None:
    rgb, _, _, _ = from_array(np.array([[[-1.0, 0.5, 2.0]]]))
    np.testing.assert_array_equal(rgb, [[[0.0, 0.5, 1.0]]])


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((1, 4, 4, 3), np.uint8), "shape"),
        (np.zeros(4, np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 3), np.int64), "dtype int64"),
        (np.zeros((4, 4), bool), "dtype bool"),
    ],
)
def test_from_array_refuses_bad_arrays(array: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_array(array)


def test_to_array_and_to_uint_refusals() -> None:
    rgb = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="dtype"):
        to_array(rgb, None, np.int32, False)
    with pytest.raises(ValueError, match="alpha"):
        to_array(rgb, np.ones((2, 2)), np.uint8, True)
    with pytest.raises(ValueError, match="HxWx3"):
        to_array(np.zeros((2, 2)), None, np.uint8, False)
    with pytest.raises(ValueError, match="bit_depth"):
        to_uint(rgb, 10)


def test_to_uint_is_exact_for_every_16bit_value() -> None:
    every = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(to_uint(every.astype(np.float32) / np.float32(65535), 16), every)
    rounded = to_uint(np.array([0.4 / 255, 0.6 / 255, 254.5001 / 255]), 8)
    np.testing.assert_array_equal(rounded, [0, 1, 255])  # rounded, not truncated
