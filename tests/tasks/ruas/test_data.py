"""Image data for RUAS: reading, folders, synthetic low-light pairs (tiny generated images)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nasflow.errors import NasflowError
from nasflow.registries import DATASETS
from nasflow.tasks.ruas.data import (
    BUNDLED_IMAGES,
    DEFAULT_SPLIT,
    PairedFolders,
    SyntheticLowLight,
    UnpairedFolder,
    degrade,
    linear_to_srgb,
    list_images,
    load_bundled,
    pad_to,
    read_image,
    srgb_to_linear,
)

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _rgb(h: int = 6, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray, **kw: object) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


# -- read_image ------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["png", "bmp", "tif", "PNG"])
def test_read_lossless_rgb(tmp_path: Path, ext: str) -> None:
    arr = _rgb()
    x = read_image(_save(tmp_path / f"a.{ext}", arr))
    assert x.dtype == torch.float32 and x.shape == (3, 6, 8)
    assert torch.allclose(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_read_jpeg(tmp_path: Path) -> None:
    arr = np.full((16, 16, 3), (200, 100, 50), dtype=np.uint8)
    x = read_image(_save(tmp_path / "a.jpg", arr, quality=95))
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor([200, 100, 50]) / 255, atol=0.03)


def test_read_gray_rgba_palette(tmp_path: Path) -> None:
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    x = read_image(_save(tmp_path / "g.png", gray))
    assert x.shape == (3, 6, 8)
    assert torch.equal(x[0], x[2]) and torch.allclose(x[1], torch.from_numpy(gray).float() / 255)

    rgb = _rgb()
    rgba = np.concatenate([rgb, np.zeros((6, 8, 1), np.uint8)], axis=2)  # fully transparent
    x = read_image(_save(tmp_path / "a.png", rgba))
    assert torch.allclose(x, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)  # alpha dropped

    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.save(tmp_path / "p.png")
    x = read_image(tmp_path / "p.png")
    expect = np.asarray(pal.convert("RGB")).transpose(2, 0, 1) / 255
    assert x.shape == (3, 6, 8) and torch.allclose(x, torch.from_numpy(expect).float())


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_read_16bit(tmp_path: Path, ext: str) -> None:
    arr = np.array([[0, 65535], [32768, 256]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / f"d.{ext}")
    x = read_image(tmp_path / f"d.{ext}")
    assert x.shape == (3, 2, 2)
    assert x[0, 0, 1].item() == 1.0 and x[1, 0, 0].item() == 0.0
    assert abs(x[2, 1, 0].item() - 32768 / 65535) < 1e-6
    assert abs(x[0, 1, 1].item() - 256 / 65535) < 1e-6  # not treated as 8-bit


def test_read_corrupt_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(NasflowError, match="broken.png") as info:
        read_image(bad)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    # a truncated JPEG too
    good = _save(tmp_path / "t.jpg", _rgb(32, 32))
    (tmp_path / "trunc.jpg").write_bytes(good.read_bytes()[:200])
    with pytest.raises(NasflowError, match="trunc.jpg"):
        read_image(tmp_path / "trunc.jpg")
    with pytest.raises(NasflowError, match="missing.png"):
        read_image(tmp_path / "missing.png")


# -- list_images -----------------------------------------------------------------------------


def test_list_images(tmp_path: Path) -> None:
    for name in ["b.PNG", "a.jpg", ".hidden.png", "notes.txt", "c.Tiff"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.bmp").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "e.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.Tiff"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.jpg", "b.PNG", "c.Tiff", "d.bmp"]
    with pytest.raises(NasflowError, match="not found"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NasflowError, match="no images"):
        list_images(tmp_path / "empty")


# -- folders ---------------------------------------------------------------------------------


def test_unpaired_crop_flip_deterministic(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / f"{i}.png", _rgb(20, 30, seed=i))
    _save(tmp_path / "small.png", _rgb(5, 7, seed=9))  # smaller than the crop: reflect-padded
    ds = UnpairedFolder(tmp_path, crop=(12, 16), seed=3)
    assert len(ds) == 4
    first = [ds[i] for i in range(len(ds))]
    assert all(y.shape == (3, 12, 16) for y in first)
    again = UnpairedFolder(tmp_path, crop=(12, 16), seed=3)
    assert all(torch.equal(a, again[i]) for i, a in enumerate(first))
    # another epoch or seed gives other crops/flips (for at least one image)
    ds.set_epoch(1)
    assert any(not torch.equal(a, ds[i]) for i, a in enumerate(first))
    other = UnpairedFolder(tmp_path, crop=(12, 16), seed=4)
    assert any(not torch.equal(a, other[i]) for i, a in enumerate(first))
    # the same through DataLoader workers
    loader = torch.utils.data.DataLoader(again, batch_size=2, num_workers=2)
    batches = torch.cat(list(loader))
    assert torch.equal(batches, torch.stack(first))


@pytest.mark.parametrize("crop", [None, 12, 20])
def test_decode_cache_gives_the_same_items_and_decodes_once(tmp_path: Path, crop, monkeypatch) -> None:
    _save(tmp_path / "a.png", _rgb(14, 17, 1))
    _save(tmp_path / "b.jpg", _rgb(16, 16, 2), quality=90)
    Image.fromarray(np.arange(14 * 15, dtype=np.uint16).reshape(14, 15) * 300).save(tmp_path / "c.png")  # 16-bit
    _save(tmp_path / "d.png", _rgb(9, 30, 3))  # smaller than a 12/20 crop: padded
    plain = UnpairedFolder(tmp_path, crop=crop, seed=5)
    cached = UnpairedFolder(tmp_path, crop=crop, seed=5, cache=True)
    import nasflow.tasks.ruas.data as data

    calls: list[Path] = []
    real = data.read_image
    monkeypatch.setattr(data, "read_image", lambda p: calls.append(Path(p)) or real(p))
    for epoch in range(3):
        for ds in (plain, cached):
            ds.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
    assert len(calls) == 3 * 4 + 4  # the plain folder decodes every epoch, the cached one once per file
    kinds = {p.name: t.dtype for p, t in cached._decoded.items()}
    assert kinds == {"a.png": torch.uint8, "b.jpg": torch.uint8, "c.png": torch.float32, "d.png": torch.uint8}


def test_unpaired_flip_only_is_a_flip(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", _rgb(6, 8))
    x = read_image(tmp_path / "a.png")
    variants = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    seen = set()
    for seed in range(16):
        y = UnpairedFolder(tmp_path, flip=True, seed=seed)[0]
        matches = [k for k, v in enumerate(variants) if torch.equal(v, y)]
        assert matches
        seen.add(matches[0])
    assert len(seen) > 1
    assert torch.equal(UnpairedFolder(tmp_path, flip=False)[0], x)


def test_pad_to_tiny() -> None:
    x = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    y = pad_to(x, 9, 10)
    assert y.shape == (1, 9, 10)
    assert pad_to(torch.ones(3, 1, 1), 4, 4).shape == (3, 4, 4)


def test_paired_by_stem(tmp_path: Path) -> None:
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    for stem, ext_low, ext_high in [("001", "png", "png"), ("002", "png", "jpg"), ("010", "bmp", "png")]:
        _save(tmp_path / "low" / f"{stem}.{ext_low}", _rgb(8, 8, seed=int(stem)) // 4)
        _save(tmp_path / "high" / f"{stem}.{ext_high}", _rgb(8, 8, seed=int(stem)))
    ds = PairedFolders(tmp_path)
    assert ds.stems == ["001", "002", "010"]
    low, high, stem = ds[2]
    assert stem == "010" and low.shape == high.shape == (3, 8, 8)
    assert torch.allclose(low, read_image(tmp_path / "low" / "010.bmp"))
    assert torch.allclose(high, read_image(tmp_path / "high" / "010.png"))
    # with crop/flip, low and high get the same crop and flips (low == high // 4 pixelwise)
    cropped = PairedFolders(tmp_path, crop=4, flip=True, seed=1)
    for i in range(len(cropped)):
        if i == 1:
            continue  # 002's high is a JPEG
        a, b, _ = cropped[i]
        assert a.shape == b.shape == (3, 4, 4)
        assert torch.equal(torch.div((b * 255).round(), 4, rounding_mode="floor"), (a * 255).round())


def test_paired_unmatched_stems(tmp_path: Path) -> None:
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    for stem in ["a", "b", "c"]:
        _save(tmp_path / "low" / f"{stem}.png", _rgb(4, 4))
    for stem in ["a", "b", "z"]:
        _save(tmp_path / "high" / f"{stem}.png", _rgb(4, 4))
    with pytest.raises(NasflowError, match=r"unmatched.*only: c;.*only: z"):
        PairedFolders(tmp_path)
    _save(tmp_path / "high" / "c.jpg", _rgb(4, 4))
    _save(tmp_path / "low" / "z.png", _rgb(4, 4))
    assert len(PairedFolders(tmp_path)) == 4
    _save(tmp_path / "low" / "a.jpg", _rgb(4, 4))
    with pytest.raises(NasflowError, match="two images with stem 'a'"):
        PairedFolders(tmp_path)


def test_paired_size_mismatch(tmp_path: Path) -> None:
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    _save(tmp_path / "low" / "a.png", _rgb(4, 4))
    _save(tmp_path / "high" / "a.png", _rgb(4, 5))
    with pytest.raises(NasflowError, match="differs in size"):
        PairedFolders(tmp_path)[0]


# -- synthetic -------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoSocket(socket.socket):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise OSError("network disabled in this test")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", NoSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_synthetic_bundled_offline(no_network: None) -> None:
    import nasflow.tasks.ruas.data as data

    data._CLEAN_CACHE.clear()
    for name in BUNDLED_IMAGES:
        clean = data.load_bundled(name)
        assert clean.ndim == 3 and clean.shape[0] == 3 and min(clean.shape[1:]) >= 256
        assert 0.0 <= clean.min() and clean.max() <= 1.0 and clean.std() > 0.05


def test_synthetic_deterministic_and_dark(no_network: None) -> None:
    ds = SyntheticLowLight(split=None, variants=2, crop=48, seed=5)
    assert len(ds) == 2 * len(BUNDLED_IMAGES)
    for i in range(len(ds)):
        low, high, name = ds[i]
        assert name == ds.name(i)
        assert low.shape == high.shape == (3, 48, 48)
        assert low.dtype == high.dtype == torch.float32
        assert 0.0 <= low.min() and low.max() <= 1.0
        assert low.mean() < 0.5 * high.mean()
        low2, high2, name2 = SyntheticLowLight(split=None, variants=2, crop=48, seed=5)[i]
        assert name2 == name and torch.equal(low, low2) and torch.equal(high, high2)
    other = SyntheticLowLight(split=None, variants=2, crop=48, seed=6)
    assert not torch.equal(ds[0][0], other[0][0])
    # variants of one image differ in degradation
    full = SyntheticLowLight("test", variants=2)
    (a, ha, _), (b, hb, _) = full[0], full[1]
    assert torch.equal(ha, hb) and not torch.equal(a, b)


def test_synthetic_uncropped_pair_reproducible() -> None:
    ds = SyntheticLowLight("val", variants=1, seed=0)
    low, high, name = ds[0]
    assert name == "coins_000" and low.shape == high.shape and high.shape[0] == 3
    assert torch.equal(low, SyntheticLowLight("val", variants=1, seed=0)[0][0])
    # 8-bit quantized, like a camera file
    assert torch.equal((low * 255).round() / 255, low)


def test_synthetic_splits() -> None:
    ds = SyntheticLowLight("train", variants=3)
    lists = ds.split_lists()
    assert set(lists) == {"train", "val", "test"}
    assert lists["train"] == ds.names()
    assert len(lists["val"]) == 3 * len(DEFAULT_SPLIT["val"])
    scenes = {k: {n.rsplit("_", 1)[0] for n in v} for k, v in lists.items()}
    assert not (scenes["train"] & scenes["val"]) and not (scenes["train"] & scenes["test"])
    assert not (scenes["val"] & scenes["test"])
    assert set().union(*scenes.values()) == set(BUNDLED_IMAGES)
    # the test set is several different photos, none of which trains
    assert len(DEFAULT_SPLIT["test"]) >= 3 and not set(DEFAULT_SPLIT["test"]) & set(DEFAULT_SPLIT["train"])
    with pytest.raises(NasflowError, match="unknown split"):
        SyntheticLowLight("holdout")
    with pytest.raises(NasflowError, match="unknown bundled image"):
        SyntheticLowLight(images=["moon"])


def _linear_balance(x: torch.Tensor) -> torch.Tensor:
    """Each channel's mean in linear light over the mean of all three (grey world)."""
    means = srgb_to_linear(x).mean(dim=(1, 2))
    return means / means.mean()


@pytest.mark.parametrize("name", sorted(BUNDLED_IMAGES))
def test_degradation_is_one_exposure_in_linear_light(name: str) -> None:
    """The darkening changes exposure, not colour: in linear light the low image's colour balance is
    the clean photo's (what a global gain undoes), up to noise and clipping at black (4 % on the
    darkest photo, rocket). A power curve on sRGB values (the former ``k * clean ** gamma``) moved it
    by up to 24 % (rocket), 13 % (coffee), 9 % (motorcycle) on these variants."""
    for variant in range(2):
        low, high, _ = SyntheticLowLight(images=[name], variants=2, seed=0)[variant]
        assert 0.02 < low.mean() < 0.5 * high.mean()
        assert torch.allclose(_linear_balance(low), _linear_balance(high), rtol=0.05, atol=0)


def test_noise_free_degradation_is_a_gain_in_linear_light() -> None:
    high = load_bundled("coffee")
    low = degrade(high, torch.Generator().manual_seed(0), exposure=(0.1, 0.1), photons=(1e9, 1e9),
                  read_noise=(0.0, 0.0), quantize=False)
    assert torch.allclose(srgb_to_linear(low), 0.1 * srgb_to_linear(high), atol=1e-4)
    x = torch.linspace(0, 1, 101)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6)


def test_registered() -> None:
    assert DATASETS.get("ruas.unpaired") is UnpairedFolder
    assert DATASETS.get("ruas.paired") is PairedFolders
    assert DATASETS.get("ruas.synthetic") is SyntheticLowLight


# -- real data (skipped when ../shared/data is absent) ---------------------------------------


@pytest.mark.skipif(not (SHARED / "lol" / "low").is_dir(), reason="../shared/data/lol not present")
def test_real_lol_smoke() -> None:
    ds = UnpairedFolder(SHARED / "lol" / "low", crop=64, seed=0)
    assert len(ds) >= 1
    y = ds[0]
    assert y.shape == (3, 64, 64) and 0.0 <= y.min() and y.max() <= 1.0
    full = read_image(ds.files[0])
    assert full.shape == (3, 400, 600) and full.mean() < 0.3
    if (SHARED / "lol" / "high").is_dir():
        pairs = PairedFolders(SHARED / "lol")
        low, high, stem = pairs[0]
        assert stem == ds.files[0].stem and low.mean() < high.mean()
