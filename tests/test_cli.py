"""The command line: help texts, the error policy (one line, exit 2), listing registries."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from nasflow import __version__, cli
from nasflow.cli import main
from nasflow.errors import ConfigError


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nasflow: error: "), err
    return lines[0]


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nasflow")
    assert "examples:" in out
    for command in ("run", "viz", "list"):
        assert f"nasflow {command} " in out


@pytest.mark.parametrize("command", ["viz", "list", "run", "search", "train", "eval"])
def test_subcommand_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: nasflow {command}")
    assert "examples:" in out and f"  nasflow {command} " in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nasflow {__version__}"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: nasflow" in capsys.readouterr().err


def test_missing_genotype_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    assert main(["viz", str(missing)]) == 2
    captured = capsys.readouterr()
    assert str(missing) in _one_error_line(captured.err)
    assert captured.out == "" and "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.yaml", "schema: 1\ncells: [\n", "not valid YAML"),  # yaml's message spans lines
        ("bad2.json", '{"schema": 1, "space": "distill", "cells": {"iem": [{"op": "conv_3x3"}]}}',
         "field 'cells.iem[0]': missing src, dst"),
        ("bad3.json", '{"schema": 7, "space": "distill", "cells": {}}', "field 'schema'"),
    ],
)
def test_malformed_genotype_is_one_line_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert main(["viz", str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert problem in line and str(path) in line
    assert not (tmp_path / Path(name).stem).with_suffix(".dot").exists()


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["viz", str(tmp_path / "nope.json"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("nasflow: error:")


def test_list_ops(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "ops"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert {"conv_3x3", "sep_conv_3x3", "none", "skip_connect"} <= set(rows)
    assert len(rows["conv_3x3"].split()) > 1  # with its description


def test_list_accepts_singular_and_rejects_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "space"]) == 0
    assert {"darts", "distill"} <= {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert main(["list", "wizards"]) == 2
    assert "unknown registry 'wizards'" in capsys.readouterr().err


def test_list_everything_is_grouped(capsys: pytest.CaptureFixture[str]) -> None:
    from nasflow.registries import ALL

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    headers = [line[:-1] for line in out.splitlines() if line and not line.startswith(" ")]
    assert headers == list(ALL)
    assert "  sep_conv_3x3" in out


def test_run_with_missing_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["run", str(missing), "--set", "search.epochs=1"]) == 2
    assert str(missing) in _one_error_line(capsys.readouterr().err)


def test_run_with_a_folder_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path)]) == 2
    assert "directory" in _one_error_line(capsys.readouterr().err)


def test_run_override_needs_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "demo", "--set", "epochs"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_run_hands_its_arguments_to_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Wiring only: a stand-in runner module, so this holds whatever the real runner does."""
    calls = []

    def run_from_file(config: str, overrides: list[str], out: str | None, quiet: bool, resume: str | None) -> Path:
        calls.append((config, overrides, out, quiet, resume))
        return tmp_path / "run"

    monkeypatch.setitem(sys.modules, "nasflow.run.runner", types.SimpleNamespace(run_from_file=run_from_file))
    assert main(["run", "demo", "--set", "a.b=1", "--set", "c=x=y", "--out", "o", "--quiet"]) == 0
    assert calls == [("demo", ["a.b=1", "c=x=y"], "o", True, None)]
    assert capsys.readouterr().out.strip() == f"run folder: {tmp_path / 'run'}"
    assert main(["run", "demo", "--resume", "runs/x"]) == 0
    assert calls[-1] == ("demo", [], None, False, "runs/x")


def _raise(exc: BaseException):  # type: ignore[no-untyped-def]
    def handler(args: object) -> int:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "code", "start"),
    [
        (ConfigError("search.epochs: expected an int\ngot 'x'"), 2, "nasflow: error: search.epochs"),
        (FileNotFoundError(2, "No such file or directory", "data/x.png"), 2, "nasflow: error: No such file"),
        (RuntimeError("boom"), 1, "nasflow: internal error: RuntimeError: boom"),
        (KeyboardInterrupt(), 130, "nasflow: interrupted"),
    ],
)
def test_error_policy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: BaseException, code: int, start: str
) -> None:
    monkeypatch.setattr(cli, "_cmd_list", _raise(exc))
    assert main(["list"]) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(start), err
    assert ("--debug" in err) == (code == 1)


def test_python_dash_m_nasflow() -> None:
    proc = subprocess.run([sys.executable, "-m", "nasflow", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: nasflow") and "examples:" in proc.stdout
