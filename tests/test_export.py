"""``nasflow export``: TorchScript (and ONNX when installed) files that compute the model's output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_files import ruas_model_file

from nasflow.cli import main
from nasflow.errors import ConfigError
from nasflow.infer.export import TRACE_SIZE, ExportCheckFailed, export_model, predict_module

SIZES = ((1, 3, 67, 91), (2, 3, 40, 23))  # both differ from the tracing example


def _model_file(path: Path, use_nrm: bool = True, seed: int = 0) -> Path:
    return ruas_model_file(path, use_nrm, seed)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model_file(tmp_path_factory.mktemp("model") / "m.pt")


def _compare_reloaded(spec: str | Path, exported: Path) -> None:
    module = predict_module(spec)
    scripted = torch.jit.load(str(exported))
    for size in SIZES:
        assert size[2:] != TRACE_SIZE[2:]
        x = torch.rand(*size) * 0.4
        with torch.no_grad():
            want, got = module(x), scripted(x)
        assert got.shape == x.shape
        assert (got - want).abs().max().item() < 1e-5
        assert 0.0 <= got.min().item() and got.max().item() <= 1.0  # the clamped output


def test_torchscript_export_of_a_model_file(model_path: Path, tmp_path: Path, single_thread: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "m.ts"
    assert main(["export", str(model_path), "-o", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and str(out) in line and "max abs diff" in line and "KB" in line
    _compare_reloaded(model_path, out)
    assert [p.name for p in out.parent.iterdir()] == ["m.ts"]  # no temp file left behind


@pytest.mark.parametrize("name", ["ruas-auto", "ruas-mit"])  # the scene policy; the key policy with its shoulder
def test_torchscript_export_of_a_shipped_model(name: str, tmp_path: Path, single_thread: None) -> None:
    result = export_model(name, tmp_path / f"{name}.ts")
    assert result.path.is_file() and result.max_abs_diff < 1e-5 and result.size_bytes > 0
    _compare_reloaded(name, result.path)


def test_refuses_to_overwrite(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.ts"
    out.write_bytes(b"keep me")
    assert main(["export", str(model_path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    assert main(["export", str(model_path), "-o", str(out), "--overwrite"]) == 0
    torch.jit.load(str(out))


def test_bad_format_is_a_usage_error(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(model_path), "-o", str(tmp_path / "m.x"), "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert not (tmp_path / "m.x").exists()


def test_unknown_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "no-such-model", "-o", str(tmp_path / "m.ts")]) == 2
    assert "\n" not in capsys.readouterr().err.strip()


def test_a_failed_check_deletes_the_output(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.ts"
    with pytest.raises(ExportCheckFailed):
        export_model(model_path, out, tolerance=-1.0)  # nothing passes a negative tolerance
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_the_package_says_what_to_install(model_path: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(ConfigError, match="pip install onnx onnxruntime"):
        export_model(model_path, tmp_path / "m.onnx", fmt="onnx")
    assert list(tmp_path.iterdir()) == []


def test_onnx_export(model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    result = export_model(model_path, tmp_path / "m.onnx", fmt="onnx")
    assert result.path.is_file()
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    module = predict_module(model_path)
    for size in SIZES:
        x = torch.rand(*size) * 0.4
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            assert (got - module(x)).abs().max().item() < 1e-5
