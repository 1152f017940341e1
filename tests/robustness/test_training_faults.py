"""Issue #8, training faults: a loss that turns NaN/inf stops the run in one line (step, loss terms,
learning rates) keeping the last good checkpoint; Ctrl-C during the search checkpoints and exits 130,
and --resume ends exactly where an uninterrupted run ends; SIGKILL at random moments (10 seeded
trials) never leaves a run folder that cannot be loaded or resumed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from rbutil import TINY, assert_one_line_error, cli, env, nasflow, sets

from nasflow.run.checkpoint import load_safe
from nasflow.cli import EXIT_DIVERGED
from nasflow.errors import NasflowError

SHORT = [kv for kv in TINY if not kv.startswith(("search.epochs", "task_options.train_samples"))] + [
    "search.epochs=3", "task_options.train_samples=32", "checkpoint.every_steps=1"]  # 2 steps per epoch


def _poison_after(monkeypatch: pytest.MonkeyPatch, calls: int, where: str = "loss") -> None:
    """Make the demo task's loss NaN from its ``calls``-th evaluation on (a stand-in for any blow-up)."""
    from nasflow.tasks.planted import PlantedTask

    real = getattr(PlantedTask, where)
    count = {"n": 0}

    def poisoned(self, model, batch):  # noqa: ANN001
        terms = dict(real(self, model, batch))
        count["n"] += 1
        if count["n"] >= calls:
            terms = {k: v * float("nan") for k, v in terms.items()}
        return terms

    monkeypatch.setattr(PlantedTask, where, poisoned)


def test_nan_loss_in_search_stops_with_step_terms_and_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison_after(monkeypatch, calls=7)  # two loss calls a step (arch, weights): step 4 goes NaN
    out = tmp_path / "run"
    code, _, err = cli(["search", "demo", "--out", str(out), "--quiet", *sets(SHORT)])
    assert code == EXIT_DIVERGED == 3
    line = assert_one_line_error(err, "search diverged at step 4 (epoch 2, step 2 of 2)", "train/loss=nan",
                                 "search.weight_optimizer.lr=0.05", "search.arch_optimizer.lr=0.01",
                                 "last good checkpoint")
    assert "(epoch 2, step 1)" in line  # the checkpoint it names, written after step 3
    state = load_safe(out / "checkpoints" / "last.ckpt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (out / "genotype.json").exists() and not (out / ".nasflow.lock").exists()


def test_exploding_learning_rate_is_caught_for_real(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = cli(["search", "demo", "--out", str(out), "--quiet", *sets(SHORT + ["search.weight_optimizer.lr=1e30"])])
    assert code == EXIT_DIVERGED
    assert_one_line_error(err, "search diverged at step", "NaN or infinite", "search.weight_optimizer.lr=1e+30")
    for name in ("last.ckpt", "prev.ckpt"):
        if (out / "checkpoints" / name).exists():
            state = load_safe(out / "checkpoints" / name)
            assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_nan_loss_in_training_stops_with_phase_epoch_and_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasflow.tasks.planted import PlantedTask

    real_train = PlantedTask.train_batches

    def train_batches(self, epoch):  # noqa: ANN001, ANN202 - the search is untouched, training gets a NaN input
        return [(x * float("nan"), y) for x, y in real_train(self, epoch)]

    monkeypatch.setattr(PlantedTask, "train_batches", train_batches)
    out = tmp_path / "run"
    code, _, err = cli(["run", "demo", "--out", str(out), "--quiet", *sets(TINY)])
    assert code == EXIT_DIVERGED
    assert_one_line_error(err, "training diverged in phase 'all', epoch 1, batch 1", "loss=nan", "train.lr=0.01")
    assert (out / "genotype.json").exists() and (out / "checkpoints" / "last.ckpt").exists()
    assert not (out / "model.pt").exists()


SIGINT_RUN = ["search.epochs=6", "train.epochs=1", "task_options.train_samples=64", "task_options.val_samples=16",
              "task_options.size=12", "task_options.batch_size=8", "search.hypergradient=finite_difference",
              "deterministic=true", "tensorboard=false"]  # 4 steps per epoch, epoch-end checkpoints only


def _progress(ckpt: Path) -> int:
    try:
        state = load_safe(ckpt)
    except NasflowError:
        return -1
    return state["epoch"] * 4 + state["step_in_epoch"]


def test_ctrl_c_checkpoints_exits_130_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = lambda out, *extra: ["run", "demo", "--out", str(out), "--quiet", *sets(SIGINT_RUN), *extra]  # noqa: E731
    reference = nasflow(*args(full))
    victim = nasflow(*args(cut))
    ckpt = cut / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while _progress(ckpt) < 4:  # after the first epoch, 20 steps before the end of the search
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGINT)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, err
    assert "nasflow: interrupted" in err and f"--resume {cut}" in err and "Traceback" not in err
    stopped_at = _progress(ckpt)
    assert 4 < stopped_at < 24, stopped_at  # a checkpoint written when Ctrl-C came, mid-search
    assert not (cut / "model.pt").exists() and not (cut / ".nasflow.lock").exists()

    resumed = nasflow(*args(tmp_path / "ignored", "--resume", str(cut)))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    assert (cut / "genotype.json").read_text() == (full / "genotype.json").read_text()
    a, b = load_safe(full / "checkpoints" / "last.ckpt"), load_safe(ckpt)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    ma, mb = load_safe(full / "model.pt"), load_safe(cut / "model.pt")
    for name, tensor in ma["state_dict"].items():
        assert torch.equal(tensor, mb["state_dict"][name]), name


_KILLER = textwrap.dedent("""
    import json, os, random, signal, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from nasflow.run.checkpoint import load_safe
    from nasflow.run.runner import run_from_file

    root, trials, overrides = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])

    def start(out, resume=None):
        pid = os.fork()
        if pid == 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            try:
                run_from_file("demo", overrides, out=out, quiet=True, resume=resume)
            except BaseException:
                os._exit(2)
            os._exit(0)
        return pid

    def wait(pid):
        status = os.waitpid(pid, 0)[1]
        return os.waitstatus_to_exitcode(status)

    run_from_file("demo", overrides, out=root / "reference", quiet=True)  # in this process: imports warmed up
    began = time.monotonic()
    pid, first = start(root / "timing"), None
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if first is None and (root / "timing" / "checkpoints" / "last.ckpt").exists():
            first = time.monotonic() - began  # when the first checkpoint appeared
        time.sleep(0.002)
    duration = time.monotonic() - began
    assert (root / "timing" / "model.pt").exists() and first is not None
    rng = random.Random(8)
    results = []
    for trial in range(trials):
        out = root / f"trial{trial}"
        delay = rng.uniform(0.8 * first, duration)  # from just before the first checkpoint to the end
        pid = start(out)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        code = wait(pid)
        files = sorted((out / "checkpoints").glob("*.ckpt")) if (out / "checkpoints").is_dir() else []
        loads = {}
        for f in files:
            try:
                state = load_safe(f)
                loads[f.name] = [state["epoch"], state["step_in_epoch"]]
            except Exception as exc:
                loads[f.name] = f"{type(exc).__name__}: {exc}"
        row = {"trial": trial, "delay": round(delay, 3), "killed": code == -signal.SIGKILL,
               "finished_before_kill": (out / "model.pt").exists() and code == 0, "checkpoints": loads,
               "stray_temp": sorted(p.name for p in out.rglob("*.tmp")) if out.exists() else []}
        if files:
            row["resume_exit"] = wait(start(out, resume=out))
            row["same_genotype"] = (out / "genotype.json").read_text() == (root / "reference" / "genotype.json").read_text()
            row["same_model"] = all(torch.equal(a, b) for a, b in zip(
                load_safe(root / "reference" / "model.pt")["state_dict"].values(),
                load_safe(out / "model.pt")["state_dict"].values()))
            row["left_after_resume"] = sorted(p.name for p in out.rglob("*.tmp"))
        results.append(row)
    print(json.dumps({"duration": duration, "first_checkpoint": first, "results": results}))
""")


def test_sigkill_at_random_moments_never_leaves_an_unloadable_run(tmp_path: Path) -> None:
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    overrides = SHORT + ["deterministic=true", "search.epochs=4", "task_options.train_samples=64"]  # 16 steps
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "10", json.dumps(overrides)], env=env(),
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = report["results"]
    assert len(rows) == 10
    for row in rows:
        for name, loaded in row["checkpoints"].items():  # every checkpoint file present loads
            assert isinstance(loaded, list), (row["trial"], name, loaded)
        assert all(name.startswith(".") for name in row["stray_temp"]), row
        if row["checkpoints"]:  # and the run resumes to the uninterrupted result
            assert row["resume_exit"] == 0, row
            assert row["same_genotype"] and row["same_model"], row
            assert row["left_after_resume"] == [], row
    assert sum(1 for row in rows if row["checkpoints"] and not row["finished_before_kill"]) >= 5, rows
