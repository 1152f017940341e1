"""``nasflow.infer.inference``: precision and CUDA-graph options of :class:`~nasflow.infer.inference.Enhancer`.

The CUDA tests run only where a GPU is present (they are skipped on CPU-only CI and were run on a
lent GPU machine); the CPU tests check the refusals and defaults users meet without one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_files import ruas_model_file

from nasflow.cli import main
from nasflow.errors import ConfigError
from nasflow.infer.inference import DEFAULT_CUDA_TILE, load_model
from nasflow.infer.tiling import DEFAULT_TILE

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ruas_model_file(tmp_path_factory.mktemp("model") / "m.pt", True, 0)


def test_cpu_defaults_are_exact_float32_with_cache_sized_tiles(model_path: Path) -> None:
    enhancer = load_model(model_path, device="cpu")
    assert enhancer.dtype == torch.float32 and enhancer.tile == DEFAULT_TILE
    assert all(b.dtype == torch.float32 for b in enhancer.network.buffers() if b.is_floating_point())


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_a_cpu_is_refused_in_one_line(model_path: Path, precision: str) -> None:
    with pytest.raises(ConfigError, match=f"--precision {precision} needs a CUDA device"):
        load_model(model_path, device="cpu", precision=precision)


def test_an_unknown_precision_is_refused_before_the_model_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="precision must be one of fp32, fp16, bf16"):
        load_model(tmp_path / "missing.pt", device="cpu", precision="fp8")


def test_cli_refuses_half_precision_without_a_gpu(model_path: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "in.png"
    from nasflow.infer.imageio import write_image

    write_image(image, np.full((8, 8, 3), 0.1, np.float32))
    code = main(["enhance", str(image), "-o", str(tmp_path / "out"), "--model", str(model_path),
                 "--device", "cpu", "--precision", "fp16"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a CUDA device" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "in.png").exists()


def test_cuda_graphs_are_ignored_on_a_cpu(model_path: Path) -> None:
    plain = load_model(model_path, device="cpu")
    asked = load_model(model_path, device="cpu", cuda_graphs=True)
    x = torch.rand(1, 3, 40, 52) * 0.3
    assert torch.equal(plain.enhance_tensor(x), asked.enhance_tensor(x))


# -- on a GPU ---------------------------------------------------------------------------------------------
@cuda
def test_cuda_fp32_with_graphs_equals_the_cpu_result_tiled_or_whole(model_path: Path) -> None:
    x = torch.rand(1, 3, 300, 410) * 0.3
    cpu = load_model(model_path, device="cpu").enhance_tensor(x, tile=10_000)
    gpu = load_model(model_path, device="cuda")
    assert gpu.tile == DEFAULT_CUDA_TILE
    for tile in (10_000, 128):  # whole, then tiles of three shapes (each its own graph)
        out = gpu.enhance_tensor(x, tile=tile)
        assert (out - cpu).abs().max() < 1e-4  # float32 on both (TF32 off); other kernels, other rounding
    assert gpu._forward.disabled is None and len(gpu._forward.captured_shapes) >= 2


@cuda
def test_graph_replay_equals_eager_and_outputs_survive_the_next_call(model_path: Path) -> None:
    graphs = load_model(model_path, device="cuda", cuda_graphs=True)
    eager = load_model(model_path, device="cuda", cuda_graphs=False)
    a, b = torch.rand(1, 3, 64, 64) * 0.3, torch.rand(1, 3, 64, 64) * 0.3
    first = graphs.enhance_tensor(a)
    second = graphs.enhance_tensor(b)  # same shape: replays the same graph
    assert torch.equal(first, eager.enhance_tensor(a)) and torch.equal(second, eager.enhance_tensor(b))
    assert len(graphs._forward.captured_shapes) == 1


@cuda
@pytest.mark.parametrize("precision,tolerance", [("fp16", 5e-3), ("bf16", 3e-2)])
def test_half_precision_stays_close_to_float32_on_a_shipped_model(precision: str, tolerance: float) -> None:
    # a smooth dark frame: random weights or white noise amplify rounding far beyond real photos
    yy, xx = torch.meshgrid(torch.linspace(0, 6, 240), torch.linspace(0, 9, 320), indexing="ij")
    x = (0.12 + 0.08 * torch.sin(xx) * torch.cos(yy)).expand(1, 3, 240, 320).contiguous()
    exact = load_model("ruas-lol", device="cuda").enhance_tensor(x)
    half = load_model("ruas-lol", device="cuda", precision=precision)
    out = half.enhance_tensor(x)
    assert out.dtype == torch.float32 and half.dtype != torch.float32
    assert (out - exact).abs().max() < tolerance


@cuda
def test_compiled_forward_equals_eager(model_path: Path) -> None:
    x = torch.rand(1, 3, 96, 128) * 0.3
    eager = load_model(model_path, device="cuda", cuda_graphs=False).enhance_tensor(x)
    compiled = load_model(model_path, device="cuda", compile=True).enhance_tensor(x)
    assert (compiled - eager).abs().max() < 1e-4


def test_default_tiling_runs_small_images_whole_and_large_ones_in_tiles(model_path: Path, monkeypatch) -> None:
    import nasflow.infer.inference as inference

    calls: list[tuple[int, ...]] = []
    enhancer = load_model(model_path, device="cpu")
    real = enhancer._forward
    enhancer._forward = lambda x: calls.append(tuple(x.shape[-2:])) or real(x)
    enhancer.enhance_tensor(torch.rand(1, 3, 400, 600))
    assert calls == [(400, 600)]  # 0.24 MP: one piece, although wider than a tile
    monkeypatch.setattr(inference, "WHOLE_PIXELS", 100_000)
    calls.clear()
    enhancer.enhance_tensor(torch.rand(1, 3, 400, 600))
    assert len(calls) == 2 and all(w <= DEFAULT_TILE + 2 * enhancer.halo for _, w in calls)
    calls.clear()
    explicit = load_model(model_path, device="cpu", tile=512)  # an explicit tile is always honoured
    explicit._forward = lambda x: calls.append(tuple(x.shape[-2:])) or real(x)
    monkeypatch.setattr(inference, "WHOLE_PIXELS", 1 << 20)
    explicit.enhance_tensor(torch.rand(1, 3, 400, 600))
    assert len(calls) == 2
