"""Issue #8, images: every odd or hostile file is handled or refused in one line, and a folder run
goes on past the bad ones to a summary and exit code 1."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rbutil import cli

from nasflow.infer.imageio import ImageError, read_image


def _dark(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 60).astype(np.uint8)


def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG of a few hundred bytes whose header declares width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * 64) * 4)  # a few rows; decoding would need 7.5 GB
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def _png16(h: int, w: int) -> bytes:
    from nasflow.infer.imageio import _encode_png16

    samples = (np.random.default_rng(4).random((h, w, 3)) * 12000).astype(np.uint16)
    return _encode_png16(samples)


def _exif_rotated_jpeg() -> bytes:
    image = Image.fromarray(_dark(10, 20, 5))  # stored 20 wide x 10 high, displayed rotated
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


def jpeg_bomb() -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to claim 65,000 x 65,000 pixels."""
    data = bytearray(_jpeg_bytes(_dark(16, 16, 8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def _gray16_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(3).random((7, 9)) * 9000).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_dark(12, 16, 6)).convert("CMYK").save(buf, format="JPEG")
    return buf.getvalue()


def _palette_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_dark(14, 18, 7)).quantize(16).save(buf, format="PNG")
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.fromarray(_dark(12, 12, s)).convert("P") for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


# name -> (bytes, expected: "ok" | fragment of the refusal, (height, width) of the output or None)
def cases() -> dict[str, tuple[bytes, str, tuple[int, int] | None]]:
    png = _png_bytes(_dark(30, 40))
    jpeg = _jpeg_bytes(_dark(30, 40, 1))
    return {
        "zero bytes.png": (b"", "is empty (0 bytes)", None),
        "random.png": (np.random.default_rng(9).bytes(2000), "is not an image", None),
        "truncated.png": (png[: len(png) // 2], "truncated or corrupt", None),
        "cut short.jpg": (jpeg[: len(jpeg) // 2], "truncated", None),
        "bomb.png": (bomb_png(), "over the limit of 100,000,000", None),
        "jpeg bomb.jpg": (jpeg_bomb(), "over the limit of 100,000,000", None),
        "bad checksum.png": (png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], "", None),
        "jpeg named.png": (jpeg, "ok", (30, 40)),
        "cmyk.jpg": (_cmyk_jpeg(), "ok", (12, 16)),
        "palette.png": (_palette_png(), "ok", (14, 18)),
        "animated.gif": (_animated_gif(), "ok", (12, 12)),
        "deep16.png": (_png16(9, 11), "ok", (9, 11)),
        "gray16.png": (_gray16_png(), "ok", (7, 9)),
        "gray.png": (_png_bytes(_dark(13, 7)[..., 0], "L"), "ok", (13, 7)),
        "rgba.png": (_png_bytes(np.dstack([_dark(8, 9), np.full((8, 9), 128, np.uint8)]), "RGBA"), "ok", (8, 9)),
        "exif rotated.jpg": (_exif_rotated_jpeg(), "ok", (20, 10)),
        "naïve café 写真 ü.png": (_png_bytes(_dark(6, 5)), "ok", (6, 5)),
        "one pixel.png": (_png_bytes(_dark(1, 1)), "ok", (1, 1)),
        "two pixels.png": (_png_bytes(_dark(2, 2)), "ok", (2, 2)),
    }


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "in put"
    folder.mkdir()
    for name, (data, _, _) in cases().items():
        (folder / name).write_bytes(data)
    for name, (_, _, _) in special_cases().items():
        if name == "pipe.png":
            os.mkfifo(folder / name)  # reading it would block forever
        else:
            (folder / name).symlink_to(folder / "no such target.png")
    (folder / "a folder.png").mkdir()  # not a file: not an input at all
    return folder


def special_cases() -> dict[str, tuple[bytes, str, None]]:
    return {"pipe.png": (b"", "is not a regular file", None), "dangling link.png": (b"", "no such file", None)}


def test_each_file_is_read_or_refused_with_a_documented_error(hostile_folder: Path) -> None:
    for name, (_, expected, shape) in {**cases(), **special_cases()}.items():
        path = hostile_folder / name
        if expected == "ok":
            loaded = read_image(path)
            assert loaded.rgb.shape == (*shape, 3), name
            assert np.isfinite(loaded.rgb).all() and loaded.rgb.min() >= 0 and loaded.rgb.max() <= 1, name
        else:
            with pytest.raises(ImageError) as info:
                read_image(path)
            message = str(info.value)
            assert "\n" not in message and name in message and expected in message, message


def test_bomb_is_refused_before_decoding(hostile_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 50,000 x 50,000 header is refused from the header alone: no pixel decoder runs."""
    from nasflow.infer import imageio

    def no_decoding(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("decoded a decompression bomb")

    monkeypatch.setattr(imageio, "_pixels_from_pillow", no_decoding)
    monkeypatch.setattr(imageio, "_read_png16", no_decoding)
    with pytest.raises(ImageError, match=r"50000x50000 is 2,500,000,000 pixels, over the limit of 100,000,000 "
                                         r"\(a guard against decompression bombs\); --max-pixels raises it"):
        read_image(hostile_folder / "bomb.png")


def test_max_pixels_flag_refuses_and_admits(ruas_model: Path, tmp_path: Path) -> None:
    image = tmp_path / "big.png"
    Image.fromarray(_dark(200, 300)).save(image)  # 60,000 pixels
    code, out, err = cli(["enhance", str(image), "-o", str(tmp_path / "o1"), "--model", str(ruas_model), "--quiet",
                          "--max-pixels", "50000"])
    assert code == 1 and "over the limit of 50,000" in err and "--max-pixels raises it" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = cli(["enhance", str(image), "-o", str(tmp_path / "o2"), "--model", str(ruas_model), "--quiet",
                          "--max-pixels", "60000"])
    assert code == 0, err
    with Image.open(tmp_path / "o2" / "big.png") as im:
        assert im.size == (300, 200)


def test_folder_run_continues_past_bad_files(hostile_folder: Path, ruas_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = cli(["enhance", str(hostile_folder), "-o", str(out), "--model", str(ruas_model),
                                "--quiet"])
    table = {**cases(), **special_cases()}
    bad = [name for name, (_, expected, _) in table.items() if expected != "ok"]
    good = [name for name in table if name not in bad]
    assert code == 1, stderr
    assert f"enhanced {len(good)} of {len(table)} images" in stdout and f"; {len(bad)} failed" in stdout
    failed_lines = [line for line in stderr.splitlines() if line.startswith("nasflow: failed ")]
    assert len(failed_lines) == len(bad), stderr
    for name in bad:  # exactly one line per bad file, naming it and why
        mine = [line for line in failed_lines if f"/{name}: " in line]
        assert len(mine) == 1 and table[name][1] in mine[0], (name, stderr)
    for line in stderr.splitlines():
        assert line.startswith(("nasflow: failed ", "nasflow: note: ")), line
    assert "used the first of 3 frames" in stderr  # the animated GIF says so
    assert "EXIF orientation 6 applied" in stderr and "CMYK converted to RGB" in stderr
    for name in good:
        result = out / Path(name).with_suffix(".png").name
        loaded = read_image(result)
        assert loaded.rgb.shape[:2] == table[name][2], name
        assert np.isfinite(loaded.rgb).all(), name
    assert read_image(out / "deep16.png").bit_depth == 16
    assert read_image(out / "gray.png").gray
    assert read_image(out / "rgba.png").alpha is not None
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert sorted(p.name for p in hostile_folder.iterdir()) == sorted([*table, "a folder.png"])  # inputs untouched


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 7), (3, 1)])
def test_tiny_images_run_end_to_end_through_ruas(ruas_model: Path, tmp_path: Path, size: tuple[int, int]) -> None:
    image = tmp_path / "tiny.png"
    Image.fromarray(_dark(*size)).save(image)
    code, _, err = cli(["enhance", str(image), "-o", str(tmp_path / "o"), "--model", str(ruas_model), "--quiet",
                        "--tile", "16"])
    assert code == 0, err
    result = read_image(tmp_path / "o" / "tiny.png")
    assert result.rgb.shape == (*size, 3) and np.isfinite(result.rgb).all()
    assert result.rgb.mean() > read_image(image).rgb.mean()  # brighter, as for any dark image
