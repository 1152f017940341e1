"""Issue #8, two runs into one folder: the second is refused in one line naming the first one's pid;
a lock left by a dead process is taken over, and the run says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SEARCH2
from rbutil import TINY, assert_one_line_error, cli, nasflow, sets

from nasflow.run.checkpoint import LOCK_NAME, RunLock
from nasflow.errors import RunLockedError

LONG = [kv for kv in TINY if not kv.startswith("search.epochs")] + ["search.epochs=400", "checkpoint.every_steps=1"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_run_into_a_running_folder_is_refused_and_a_killed_ones_lock_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = nasflow("search", "demo", "--out", str(out), "--quiet", *sets(LONG))
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "last.ckpt").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert (out / LOCK_NAME).read_text().strip() == str(first.pid)
        for argv in (["search", "demo", "--out", str(out)], ["search", "demo", "--resume", str(out)]):
            code, _, err = cli([*argv, "--quiet", *sets(LONG)])
            assert code == 2
            assert_one_line_error(err, f"run folder {out} is in use by another nasflow run (pid {first.pid}",
                                  LOCK_NAME)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert (out / LOCK_NAME).read_text().strip() == str(first.pid)  # stale now: its owner is dead
    with RunLock.acquire(out) as lock:
        assert lock.took_over == first.pid


def test_stale_lock_of_a_dead_pid_is_taken_over_and_said(run_copy: Path) -> None:
    searched_copy = run_copy
    dead = _dead_pid()
    (searched_copy / LOCK_NAME).write_text(f"{dead}\n")
    code, _, err = cli(["search", "demo", "--resume", str(searched_copy), "--quiet", *sets(SEARCH2)])
    assert code == 0, err
    assert f"took over the stale lock of pid {dead} (that process is no longer running)" in err
    assert not (searched_copy / LOCK_NAME).exists()  # released at the end
    log = (searched_copy / "log.txt").read_text()
    assert f"stale lock of pid {dead}" in log


def test_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    with RunLock.acquire(tmp_path) as lock:
        assert lock.took_over is None and (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock.acquire(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock.acquire(tmp_path) as again:  # free again after release
        assert again.took_over is None


def test_lock_file_without_an_owner_pid_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("garbage\n")
    with RunLock.acquire(tmp_path) as lock:
        assert lock.took_over is None  # nothing to name, but it is ours now
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
