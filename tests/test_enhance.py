"""``nasflow enhance`` and ``nasflow.load_model``: files, folders, dtypes, tiling, refusals."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from model_files import ruas_model_file
from PIL import Image

from nasflow.run.checkpoint import save_atomic
from nasflow.cli import main
from nasflow.infer.enhance import plan_jobs
from nasflow.infer.imageio import read_image, write_image
from nasflow.infer.inference import load_model


def _model_file(path: Path, use_nrm: bool = True, seed: int = 0) -> Path:
    return ruas_model_file(path, use_nrm, seed)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model_file(tmp_path_factory.mktemp("model") / "m.pt")


def _dark(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((h, w, 3)) * 0.25
    return (base * 255).round().astype(np.uint8)


def test_tiled_output_equals_whole_image(model_path: Path, single_thread: None) -> None:
    enhancer = load_model(model_path, device="cpu", tile=64)
    x = torch.rand(1, 3, 150, 173) * 0.3
    whole = enhancer.enhance_tensor(x, tile=10_000)
    for tile in (40, 64, 97):
        tiled = enhancer.enhance_tensor(x, tile=tile)
        assert (tiled - whole).abs().max().item() < 1e-5
    assert enhancer.halo is not None and enhancer.halo > 0


@pytest.mark.parametrize("use_nrm", [True, False])
def test_a_global_exposure_step_runs_whole_and_the_rest_in_tiles(tmp_path: Path, use_nrm: bool,
                                                                single_thread: None) -> None:
    """A model whose first step reads the whole image's mean (RUAS ``exposure_key``) still tiles:
    the step runs once on the whole image, so tiles agree with the plain network on the whole image."""
    path = ruas_model_file(tmp_path / "keyed.pt", use_nrm, exposure_key=0.46)
    enhancer = load_model(path, device="cpu", tile=48)
    assert enhancer.halo is not None and enhancer.halo > 0
    x = torch.rand(2, 3, 130, 101) * 0.1
    x[1] += 0.3  # a brighter photo: another gain
    with torch.no_grad():
        plain = enhancer.loaded.network(x).out.clamp(0, 1)
    for tile in (40, 10_000):
        assert (enhancer.enhance_tensor(x, tile=tile) - plain).abs().max().item() < 1e-5
    # tiling the network without the split would give each tile its own gain
    naive = tiled_apply_plain(enhancer.loaded.network, x, 40, enhancer.halo)
    assert (naive - plain).abs().max().item() > 1e-3


def tiled_apply_plain(network: torch.nn.Module, x: torch.Tensor, tile: int, halo: int) -> torch.Tensor:
    from nasflow.infer.tiling import tiled_apply

    with torch.no_grad():
        return tiled_apply(lambda t: network(t).out.clamp(0, 1), x, tile=tile, halo=halo)


def test_enhancer_equals_the_plain_compiled_network(model_path: Path, single_thread: None) -> None:
    """What users run (fast path, tiles) computes the compiled network's clamped output."""
    enhancer = load_model(model_path, device="cpu", tile=48)
    x = torch.rand(1, 3, 101, 77) * 0.3
    with torch.no_grad():
        plain = enhancer.loaded.network(x).out.clamp(0, 1)
    assert (enhancer.enhance_tensor(x) - plain).abs().max().item() < 1e-5


def test_tiling_with_a_halo_too_small_differs(model_path: Path, single_thread: None) -> None:
    """The halo is needed: one pixel less and the tiles disagree with the whole image."""
    from nasflow.infer.tiling import tiled_apply

    enhancer = load_model(model_path, device="cpu")
    net = enhancer.loaded.network.double()  # the plain compiled network
    x = torch.rand(1, 3, 90, 90, dtype=torch.float64) * 0.3
    with torch.no_grad():
        whole = net(x).out
        exact = tiled_apply(lambda t: net(t).out, x, tile=32, halo=enhancer.halo)
        short = tiled_apply(lambda t: net(t).out, x, tile=32, halo=enhancer.halo - 1)
    assert (exact - whole).abs().max().item() < 1e-13
    assert (short - whole).abs().max().item() > 1e-11  # far above float64 noise (exact: ~1e-15)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["hw", "hw1", "hw3", "hw4"])
def test_api_keeps_dtype_and_layout(model_path: Path, dtype: type, layout: str) -> None:
    enhancer = load_model(model_path, device="cpu")
    rng = np.random.default_rng(1)
    channels = {"hw": None, "hw1": 1, "hw3": 3, "hw4": 4}[layout]
    shape = (21, 34) if channels is None else (21, 34, channels)
    values = rng.random(shape) * 0.3
    if layout == "hw4":
        values[..., 3] = rng.random((21, 34))  # alpha: any value, passed through
    if np.issubdtype(dtype, np.integer):
        image = (values * np.iinfo(dtype).max).round().astype(dtype)
    else:
        image = values.astype(dtype)
    out = enhancer.enhance(image)
    assert out.dtype == image.dtype and out.shape == image.shape
    if layout == "hw4":
        np.testing.assert_array_equal(out[..., 3], image[..., 3])
    scale = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    assert float(out[..., :3].astype(np.float64).mean() / scale) > float(values[..., :3].mean())  # brighter


def test_api_agrees_across_dtypes(model_path: Path) -> None:
    enhancer = load_model(model_path, device="cpu")
    image8 = _dark(17, 29)
    out8 = enhancer.enhance(image8).astype(np.float64) / 255
    out_f = enhancer.enhance(image8.astype(np.float32) / 255).astype(np.float64)
    out16 = enhancer.enhance(image8.astype(np.uint16) * 257).astype(np.float64) / 65535
    assert np.abs(out8 - out_f).max() <= 0.5 / 255 + 1e-6
    assert np.abs(out16 - out_f).max() <= 0.5 / 65535 + 1e-6


def test_api_rejects_bad_arrays(model_path: Path) -> None:
    enhancer = load_model(model_path, device="cpu")
    for bad in (np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.int64), np.zeros((1, 4, 4, 3), np.uint8)):
        with pytest.raises(ValueError):
            enhancer.enhance(bad)


def _png16(path: Path, rgb16: np.ndarray) -> None:
    write_image(path, rgb16.astype(np.float64) / 65535, bit_depth=16)


def test_enhance_folder_with_mixed_files(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_dark(20, 30)).save(src / "plain photo.png")  # a name with a space
    rgba = np.dstack([_dark(20, 30, 1), np.linspace(0, 255, 600).reshape(20, 30).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    Image.fromarray(_dark(20, 30, 2)[..., 0], "L").save(src / "gray.jpg")
    rng = np.random.default_rng(3)
    _png16(src / "deep.png", (rng.random((20, 30, 3)) * 16000).astype(np.uint16))
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + zlib.compress(b"not really"))

    out = tmp_path / "out"
    code = main(["enhance", str(src), "-o", str(out), "--model", str(model_path), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # one file failed
    assert "corrupt.png" in captured.err and captured.err.count("corrupt.png") == 1
    assert "enhanced 4 of 5 images" in captured.out
    written = sorted(p.name for p in out.iterdir())
    assert written == ["alpha.png", "deep.png", "gray.png", "plain photo.png"]
    deep = read_image(out / "deep.png")
    assert deep.bit_depth == 16
    alpha = read_image(out / "alpha.png")
    np.testing.assert_allclose(alpha.alpha, rgba[..., 3] / 255.0, atol=1e-6)
    assert read_image(out / "gray.png").gray
    with Image.open(out / "plain photo.png") as im:
        assert im.size == (30, 20) and im.mode == "RGB"
    assert not list(out.glob(".*tmp"))  # no temporary files left


def test_enhance_never_overwrites_inputs_or_outputs(model_path: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_dark(12, 12)).save(src / "a.png")
    before = (src / "a.png").read_bytes()
    # -o equal to the input folder: the output would be the input itself
    code = main(["enhance", str(src), "-o", str(src), "--model", str(model_path), "--quiet", "--overwrite"])
    assert code == 1 and (src / "a.png").read_bytes() == before
    assert "would overwrite an input" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["enhance", str(src / "a.png"), "-o", str(out), "--model", str(model_path), "--quiet"]) == 0
    first = (out / "a.png").read_bytes()
    (out / "a.png").write_bytes(b"keep me")
    assert main(["enhance", str(src / "a.png"), "-o", str(out), "--model", str(model_path), "--quiet"]) == 1
    assert (out / "a.png").read_bytes() == b"keep me"
    assert main(["enhance", str(src / "a.png"), "-o", str(out), "--model", str(model_path), "--quiet",
                 "--overwrite"]) == 0
    assert (out / "a.png").read_bytes() == first


def test_plan_jobs_recursive_glob_and_format(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_dark(8, 8)).save(src / "x.jpg")
    Image.fromarray(_dark(8, 8)).save(src / "sub" / "y.png")
    jobs, refused = plan_jobs([str(src)], tmp_path / "o", recursive=True)
    assert not refused
    assert sorted(str(j.target.relative_to(tmp_path / "o")) for j in jobs) == ["sub/y.png", "x.png"]
    jobs, _ = plan_jobs([str(src / "*.jpg")], tmp_path / "o", fmt="same")
    assert [j.target.name for j in jobs] == ["x.jpg"]
    # two inputs mapping to one output: the second is refused, not silently overwritten
    Image.fromarray(_dark(8, 8)).save(src / "x.png")
    jobs, refused = plan_jobs([str(src)], tmp_path / "o")
    assert len(jobs) == 1 and len(refused) == 1 and "already writes" in refused[0][1]


def test_enhance_user_errors_are_one_line(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(_dark(8, 8)).save(tmp_path / "a.png")
    cases = [
        ["enhance", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "--model", str(model_path)],
        ["enhance", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", "ruas-lo"],
        ["enhance", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "a.png")],
        ["enhance", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", str(model_path),
         "--device", "tpu"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("nasflow: error:") and "\n" not in err, err
    main(cases[1])
    assert "did you mean 'ruas-lol'" in capsys.readouterr().err


def test_model_file_cannot_name_code(model_path: Path, tmp_path: Path) -> None:
    """A model file's task must be an installed task, never a module:attr import path."""
    from nasflow.run.checkpoint import load_safe
    from nasflow.errors import ConfigError

    saved = load_safe(model_path)
    saved["config"]["task"] = "os:system"
    bad = tmp_path / "bad.pt"
    save_atomic(saved, bad)
    with pytest.raises(ConfigError, match="not an installed task"):
        load_model(bad, device="cpu")


def test_weights_that_do_not_fit_name_the_key(model_path: Path, tmp_path: Path) -> None:
    from nasflow.run.checkpoint import load_safe
    from nasflow.errors import ConfigError

    saved = load_safe(model_path)
    saved["state_dict"]["nrm_stem.weight"] = torch.zeros(6, 3, 5, 5)
    bad = tmp_path / "bad.pt"
    save_atomic(saved, bad)
    with pytest.raises(ConfigError, match="nrm_stem.weight"):
        load_model(bad, device="cpu")
