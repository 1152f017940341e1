"""Data-parallel search (nasflow.search.distributed): 2 gloo ranks on CPU end bitwise identical.

Starts ``torch.distributed.run`` itself on tests/dist_worker.py (which documents the runs) and
compares what every rank saved.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasflow.search.distributed import DistContext, average_, broadcast_module_, is_main, shard

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "dist_worker.py"
SYNCED = ("darts_fd", "darts_fo", "random")
TIMEOUT = 180


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(cmd: list[str]) -> None:
    """Run ``cmd`` in its own session; on timeout kill that whole process group (launcher and ranks)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} timed out after {TIMEOUT}s\n{out}\n{err}")
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode})\n{out}\n{err}"


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist2")
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
          str(WORKER), str(out)])
    return out


@pytest.mark.parametrize("name", SYNCED)
def test_ranks_end_bitwise_identical(two_ranks: Path, name: str) -> None:
    r0, r1 = _load(two_ranks / f"{name}.rank0.pt"), _load(two_ranks / f"{name}.rank1.pt")
    assert r0["seen"] != r1["seen"], "the ranks trained on the same batches: the check proves nothing"
    assert r0["steps"] == r1["steps"] == 4
    assert _equal(r0["alphas"], r1["alphas"])
    assert _equal(r0["state_dict"], r1["state_dict"])
    g0 = json.loads((two_ranks / f"{name}.rank0.json").read_text())
    g1 = json.loads((two_ranks / f"{name}.rank1.json").read_text())
    assert g0 == g1


def test_without_sync_the_ranks_diverge(two_ranks: Path) -> None:
    r0, r1 = _load(two_ranks / "darts_fo_nosync.rank0.pt"), _load(two_ranks / "darts_fo_nosync.rank1.pt")
    assert not _equal(r0["alphas"], r1["alphas"])
    assert not _equal(r0["state_dict"], r1["state_dict"])
    # ... and both started from rank 0's weights (rank 1 perturbs its own before the broadcast):
    info = [json.loads((two_ranks / f"rank{r}.info.json").read_text()) for r in (0, 1)]
    assert [(i["rank"], i["world_size"], i["enabled"]) for i in info] == [(0, 2, True), (1, 2, True)]


def test_average_of_an_expanded_gradient(two_ranks: Path) -> None:
    """average_ over 2 ranks, with a tensor it cannot write in place (replaced in the list)."""
    for r in (0, 1):
        probe = json.loads((two_ranks / f"rank{r}.info.json").read_text())["probe"]
        assert probe == [[0.5, 0.5, 0.5], [1.5, 1.5]]


def test_single_process_and_union_batch(two_ranks: Path, tmp_path: Path) -> None:
    """World 1 runs the same code path; the 2-rank first-order search matches one process that sees
    the union of both ranks' batches at every step (to float rounding: averaging two equally sized
    batch means is the mean over their union)."""
    _run([sys.executable, str(WORKER), str(tmp_path), "--runs", "darts_fo"])
    _run([sys.executable, str(WORKER), str(tmp_path), "--runs", "darts_fo", "--union", "2"])
    info = json.loads((tmp_path / "rank0.info.json").read_text())
    assert (info["rank"], info["world_size"], info["enabled"]) == (0, 1, False)
    single = _load(tmp_path / "darts_fo.rank0.pt")
    assert single["steps"] == 8  # world 1 keeps every batch
    union = _load(tmp_path / "darts_fo.union2.pt")
    ranked = _load(two_ranks / "darts_fo.rank0.pt")
    assert union["steps"] == ranked["steps"] == 4
    for k, v in ranked["state_dict"].items():
        torch.testing.assert_close(union["state_dict"][k], v, rtol=1e-5, atol=1e-5)
        assert not torch.equal(single["state_dict"][k], v)


def test_helpers_without_a_process_group() -> None:
    ctx = DistContext()
    assert not ctx.enabled and ctx.is_main and is_main()
    assert shard(iter(range(7)), ctx) == list(range(7))
    assert shard(range(7), DistContext(rank=1, world_size=3, enabled=True)) == [1, 4]
    assert shard(range(7), DistContext(rank=2, world_size=3, enabled=True)) == [2, 5]
    grads = [torch.ones(3), torch.ones(()).expand(2)]
    same = list(grads)
    assert average_(grads) is grads and all(a is b for a, b in zip(grads, same))
    model = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    broadcast_module_(model)
    assert _equal(before, model.state_dict())


def test_torchrun_nasflow_run_agrees_across_ranks_and_only_rank0_writes(tmp_path: Path) -> None:
    """`torchrun -m nasflow run`: both ranks end with the same alphas; one run folder, written by rank 0."""
    out = tmp_path / "run"
    overrides = ["search.epochs=2", "train.epochs=1", "task_options.train_samples=32", "task_options.val_samples=8",
                 "task_options.size=8", "task_options.batch_size=4", "search.hypergradient=finite_difference",
                 "checkpoint.every_steps=1"]
    cwd_before = set(ROOT.iterdir())
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
          "-m", "nasflow", "run", "demo", "--out", str(out), "--quiet",
          *[a for kv in overrides for a in ("--set", kv)]])
    info = json.loads((out / "distributed.json").read_text())
    assert info["world_size"] == 2
    digests = info["alpha_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert (out / "model.pt").is_file() and (out / "genotype.json").is_file()
    assert set(ROOT.iterdir()) == cwd_before  # no second run folder (e.g. runs/...) from rank 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    log_lines = (out / "log.txt").read_text().splitlines()
    assert sum("search epoch 2/2" in line for line in log_lines) == 1  # one writer
