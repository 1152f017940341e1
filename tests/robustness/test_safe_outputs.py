"""Issue #8, outputs: never over an input, existing outputs only with --overwrite, temp-then-rename
everywhere (fault-injected and SIGKILLed), and a read-only or full output location is one error."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rbutil import assert_one_line_error, cli, env

from nasflow.infer import imageio
from nasflow.run.checkpoint import load_safe, save_atomic, save_rotating, write_text_atomic
from nasflow.infer.imageio import ImageError, read_image, write_image


def _dark(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 60).astype(np.uint8)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["a.png", "b.png", "c.jpg", "d.png", "e.png", "f.png"]):
        Image.fromarray(_dark(10 + i, 12, i)).save(folder / name)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_output_folder_equal_to_input_folder_never_touches_an_input(photos: Path, ruas_model: Path) -> None:
    before = _snapshot(photos)
    for extra in ([], ["--overwrite"], ["--format", "same", "--overwrite"]):
        code, _, err = cli(["enhance", str(photos), "-o", str(photos), "--model", str(ruas_model), "--quiet", *extra])
        assert code == 1 and err.count("would overwrite an input") >= 5, err
        assert {k: v for k, v in _snapshot(photos).items() if k in before} == before
    # the same folder spelled through a symbolic link, and a glob: still refused
    # (c.jpg -> c.png was written by the first run: an output beside the inputs is fine)
    link = photos.parent / "link"
    link.symlink_to(photos, target_is_directory=True)
    pngs = len(list(photos.glob("*.png")))
    code, _, err = cli(["enhance", str(photos / "*.png"), "-o", str(link), "--model", str(ruas_model), "--quiet",
                        "--overwrite"])
    assert code == 1 and err.count("would overwrite an input") == pngs == 6, err
    assert {k: v for k, v in _snapshot(photos).items() if k in before} == before


def test_an_output_hard_linked_to_an_input_is_replaced_not_written_through(photos: Path, ruas_model: Path,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.link(photos / "a.png", out / "a.png")  # the same inode under the output name
    before = (photos / "a.png").read_bytes()
    code, _, err = cli(["enhance", str(photos / "a.png"), "-o", str(out), "--model", str(ruas_model), "--quiet"])
    assert code == 1 and "exists; pass --overwrite" in err
    code, _, err = cli(["enhance", str(photos / "a.png"), "-o", str(out), "--model", str(ruas_model), "--quiet",
                        "--overwrite"])
    assert code == 0, err
    assert (photos / "a.png").read_bytes() == before  # renamed over the link: the input's inode is untouched
    assert (out / "a.png").read_bytes() != before


def test_failed_rename_leaves_the_old_output_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.png"
    write_image(target, np.full((4, 4, 3), 0.5, np.float32))
    old = target.read_bytes()

    def broken_replace(src, dst):  # noqa: ANN001
        raise OSError(errno.EIO, "Input/output error", str(dst))

    monkeypatch.setattr(imageio.os, "replace", broken_replace)
    with pytest.raises(ImageError, match="cannot write"):
        write_image(target, np.zeros((4, 4, 3), np.float32))
    monkeypatch.undo()
    assert target.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_write_interrupted_mid_file_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_killed(planes, pil_format, bit_depth, quality):  # noqa: ANN001
        def write(f) -> None:  # noqa: ANN001
            f.write(b"\x89PNG\r\n\x1a\n half an image")
            raise KeyboardInterrupt

        return write

    monkeypatch.setattr(imageio, "_encoder", half_then_killed)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "y.png", np.zeros((4, 4, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_and_text_writes_are_atomic_under_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "checkpoints"
    save_rotating({"step": 1}, folder)
    save_rotating({"step": 2}, folder)
    assert load_safe(folder / "last.ckpt")["step"] == 2 and load_safe(folder / "prev.ckpt")["step"] == 1

    def broken_save(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_rotating({"step": 3}, folder)
    with pytest.raises(OSError):
        save_atomic({"step": 3}, folder / "model.pt")
    monkeypatch.undo()
    assert load_safe(folder / "last.ckpt")["step"] == 2 and load_safe(folder / "prev.ckpt")["step"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "prev.ckpt"]

    text = tmp_path / "metrics.json"
    write_text_atomic(text, "old\n")

    def broken_replace(src, dst):  # noqa: ANN001
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_text_atomic(text, "new\n")
    monkeypatch.undo()
    assert text.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "metrics.json"]


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from nasflow.infer.imageio import write_image
    from nasflow.run.checkpoint import save_rotating
    import torch
    target, folder = sys.argv[1], sys.argv[2]
    rgb = np.random.default_rng(0).random((700, 900, 3)).astype(np.float32)
    state = {"w": torch.arange(2_000_000, dtype=torch.float32)}
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        write_image(target, rgb, bit_depth=16)
        state["i"] = i
        save_rotating(state, folder)
""")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_mid_write_never_leaves_a_half_written_file(tmp_path: Path, seed: int) -> None:
    """A process rewriting a 16-bit PNG and a checkpoint in a loop, SIGKILLed at a random moment:
    what is there under the real names is complete."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    target, folder = tmp_path / "out.png", tmp_path / "checkpoints"
    proc = subprocess.Popen([sys.executable, str(script), str(target), str(folder)], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    deadline = time.monotonic() + 60
    while not (folder / "prev.ckpt").exists():  # at least two rounds done
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    time.sleep(np.random.default_rng(seed).uniform(0.0, 0.4))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    loaded = read_image(target)  # complete, never a prefix
    assert loaded.rgb.shape == (700, 900, 3) and loaded.bit_depth == 16
    last, prev = load_safe(folder / "last.ckpt"), load_safe(folder / "prev.ckpt")
    assert last["w"].shape == (2_000_000,) and last["i"] >= prev["i"] >= 1
    leftovers = [p.name for p in [*tmp_path.iterdir(), *folder.iterdir()] if p.name.endswith(".tmp")]
    assert all(name.startswith(".") for name in leftovers)  # at most a hidden temp file, never a real name


def _fail_under(folder: Path, code: int, after: int = 0):  # noqa: ANN202
    """An ``os.open`` that raises ``code`` for files created under ``folder`` after ``after`` successes."""
    real_open = os.open
    count = {"n": 0}

    def fake_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if Path(os.fspath(path)).parent == folder and flags & os.O_CREAT:
            count["n"] += 1
            if count["n"] > after:
                raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    return fake_open


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_output_folder_is_one_clear_error(photos: Path, ruas_model: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """(Simulated: as root, chmod does not stop writes.)"""
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(os, "open", _fail_under(out, code))
    status, stdout, err = cli(["enhance", str(photos), "-o", str(out), "--model", str(ruas_model), "--quiet"])
    assert status == 2
    assert_one_line_error(err, f"cannot write into the output folder {out}", os.strerror(code))
    assert stdout == "" and list(out.iterdir()) == []


def test_disk_full_mid_run_is_one_clear_error_and_keeps_complete_files(photos: Path, ruas_model: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    real_encoder = imageio._encoder
    written = {"n": 0}

    def filling_encoder(*args, **kwargs):  # noqa: ANN002, ANN003
        encode = real_encoder(*args, **kwargs)

        def write(f) -> None:  # noqa: ANN001
            written["n"] += 1
            if written["n"] > 2:  # the third file fills the disk half way through
                f.write(b"\x89PNG\r\n\x1a\n")
                raise OSError(errno.ENOSPC, "No space left on device")
            encode(f)

        return write

    monkeypatch.setattr(imageio, "_encoder", filling_encoder)
    status, stdout, err = cli(["enhance", str(photos), "-o", str(out), "--model", str(ruas_model), "--quiet"])
    assert status == 2, err
    line = assert_one_line_error(err, "No space left on device", "stopped after writing 2 of 6 images")
    assert "c.png" in line  # names the file that did not fit
    files = sorted(p.name for p in out.iterdir())
    assert files == ["a.png", "b.png"]  # complete files only: no partial third, no temp file
    for name in files:
        assert read_image(out / name).rgb.shape[1] == 12


def test_disk_full_while_checkpointing_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasflow.run import checkpoint
    from rbutil import TINY, sets

    calls = {"n": 0}
    real_save = torch.save

    def filling_save(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device", getattr(f, "name", None))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", filling_save)
    out = tmp_path / "run"
    status, _, err = cli(["search", "demo", "--out", str(out), "--quiet",
                          *sets([kv for kv in TINY if "epochs" not in kv] + ["search.epochs=3"])])
    monkeypatch.undo()
    assert status == 2, err
    assert_one_line_error(err, "No space left on device")
    assert load_safe(out / "checkpoints" / "last.ckpt")["epoch"] == 1  # the good one stays
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_rotation_after_a_kill_between_its_two_renames_leaves_no_temp(tmp_path: Path) -> None:
    """A kill after prev.ckpt was linked to last.ckpt but before the new last.ckpt was renamed in
    leaves the two names on one file; the next rotation must still work and leave nothing behind."""
    folder = tmp_path / "checkpoints"
    save_rotating({"step": 1}, folder)
    os.link(folder / "last.ckpt", folder / "prev.tmp-link")
    os.replace(folder / "prev.tmp-link", folder / "prev.ckpt")  # prev and last: one inode
    save_rotating({"step": 2}, folder)
    assert load_safe(folder / "last.ckpt")["step"] == 2 and load_safe(folder / "prev.ckpt")["step"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "prev.ckpt"]
