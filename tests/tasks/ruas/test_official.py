"""Importing the authors' released RUAS checkpoints: names, formats, refusals, and equal outputs.

The released network is re-implemented independently in ``released_reference.py``; random
weights saved from it in the legacy torch format are imported, and the rebuilt nasflow network
must reproduce its outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import pickle
import re
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from nasflow.checkpoint import load_safe
from nasflow.compile import compile_model
from nasflow.config import from_dict
from nasflow.errors import ConfigError
from nasflow.genotype import Genotype
from nasflow.runner import build_task
from nasflow.schema import RunConfig
from nasflow.tasks.ruas.model import RUASNet, paper_genotype
from nasflow.tasks.ruas.official import (
    ImportRuasCommand,
    convert_released,
    import_released,
    load_released_state_dict,
)


def _load_reference():
    spec = importlib.util.spec_from_file_location("ruas_released_reference", Path(__file__).with_name(
        "released_reference.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ref = _load_reference()
pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: oversubscribed CPUs make threads slow
KEYS_FILE = Path(__file__).resolve().parents[3] / ".." / "shared" / "design" / "ruas_official_keys.txt"


def released_model(use_nrm: bool = True, seed: int = 0) -> torch.nn.Module:
    """The reference network with random float32 weights, large enough for non-trivial activations."""
    model = ref.ReleasedRUAS(use_nrm)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.8 / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def save_legacy(obj, path: Path) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)  # really the pre-1.6 format of the released files
    return path


@pytest.fixture(scope="module")
def full_ckpt(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = released_model(True)
    return model, save_legacy(model.state_dict(), tmp_path_factory.mktemp("rel") / "lol.pt")


@pytest.fixture(scope="module")
def iem_ckpt(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = released_model(False, seed=1)
    return model, save_legacy(model.state_dict(), tmp_path_factory.mktemp("rel") / "upe.pt")


def rebuild(model_file: Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network from a model file the way ``nasflow.runner.evaluate_run`` does."""
    saved = load_safe(model_file)
    cfg = from_dict(RunConfig, saved["config"])
    task = build_task(cfg, torch.device("cpu"))
    model = compile_model(task.build_supernet(), Genotype.from_dict(saved["genotype"]))
    model.load_state_dict(saved["state_dict"])
    return model, saved


def compare(reference: torch.nn.Module, ours: torch.nn.Module, use_nrm: bool) -> None:
    reference, ours = reference.double().eval(), ours.double().eval()
    g = torch.Generator().manual_seed(7)
    for shape in [(1, 3, 37, 53), (2, 3, 16, 9), (1, 3, 1, 5)]:
        y = torch.rand(shape, generator=g, dtype=torch.float64) * 0.4
        with torch.no_grad():
            u_ref, out_ref = reference(y)
            got = ours(y)
        assert (got.u - u_ref).abs().max().item() < 1e-6
        assert (got.out - out_ref).abs().max().item() < 1e-6
        if shape == (1, 3, 37, 53):  # the weights do something: not saturated, not the identity
            assert ((u_ref > 0) & (u_ref < 1)).double().mean() > 0.5
            assert (u_ref - y).abs().mean() > 0.05
            if use_nrm:
                assert (out_ref - u_ref).abs().mean() > 0.05


# --- the reference itself ------------------------------------------------------------------------
def test_reference_names_match_released_key_list() -> None:
    names = {k: tuple(v.shape) for k, v in ref.ReleasedRUAS(True).state_dict().items()}
    assert len(names) == 76
    assert sum(k.startswith("enhance_net.") for k in names) == 36
    if not KEYS_FILE.is_file():
        pytest.skip(f"{KEYS_FILE} is absent")
    listed = {}
    for line in KEYS_FILE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(\S+) \(([\d, ]*)\)$", line.strip())
        if m:
            listed[m.group(1)] = tuple(int(d) for d in m.group(2).replace(" ", "").split(",") if d)
    assert listed == names


def test_reference_genotype_is_the_paper_genotype() -> None:
    geno = paper_genotype(True)
    assert tuple(geno.ops("iem")) == ref.IEM_OPS
    assert tuple(geno.ops("nrm")) == ref.NRM_OPS


# --- equal outputs -------------------------------------------------------------------------------
def test_import_full_matches_reference(full_ckpt, tmp_path) -> None:
    reference, ckpt = full_ckpt
    out = import_released(ckpt, tmp_path / "ruas-official-lol.pt")
    assert out == tmp_path / "ruas-official-lol.pt"
    ours, saved = rebuild(out)
    assert set(saved) == {"state_dict", "genotype", "config", "meta"}
    assert saved["meta"] == {"source": "RUAS released checkpoint", "file": "lol.pt",
                             "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
    assert saved["config"]["task"] == "ruas"
    assert saved["config"]["task_options"]["use_nrm"] is True
    assert saved["config"]["task_options"]["data"] == "synthetic"
    assert Genotype.from_dict(saved["genotype"]) == paper_genotype(True)
    compare(reference, ours, use_nrm=True)


def test_import_iem_only_matches_reference(iem_ckpt, tmp_path) -> None:
    reference, ckpt = iem_ckpt
    assert all(k.startswith("enhance_net.") for k in torch.load(ckpt, weights_only=True))
    ours, saved = rebuild(import_released(ckpt, tmp_path / "upe.nasflow.pt"))
    assert saved["config"]["task_options"]["use_nrm"] is False
    assert Genotype.from_dict(saved["genotype"]) == paper_genotype(False)
    assert not any(k.startswith("nrm") for k in saved["state_dict"])
    compare(reference, ours, use_nrm=False)


def test_convert_fills_every_tensor_once(full_ckpt) -> None:
    reference, ckpt = full_ckpt
    state = load_released_state_dict(ckpt)
    genotype, state_dict, use_nrm = convert_released(state)
    assert use_nrm and genotype == paper_genotype(True)
    target = compile_model(RUASNet(use_nrm=True), genotype).state_dict()
    assert list(state_dict) == list(target)
    assert all(state_dict[k].shape == target[k].shape for k in target)
    released = reference.state_dict()
    assert torch.equal(state_dict["iem_cells.1.post.weight"], released["enhance_net.iems.1.cell.c5.weight"])
    assert torch.equal(state_dict["nrm_stem.bias"], released["denoise_net.stem.bias"])
    assert torch.equal(state_dict["nrm_cells.2.edges.c3_r.op.weight"], released["denoise_net.nrms.2.c3_r.op.weight"])
    assert torch.equal(state_dict["nrm_out.weight"], released["denoise_net.activate.0.weight"])


# --- accepted variants ---------------------------------------------------------------------------
@pytest.mark.parametrize("wrapper", ["state_dict", "model", None])
def test_wrapped_and_dataparallel_checkpoints(full_ckpt, tmp_path, wrapper) -> None:
    reference, _ = full_ckpt
    sd = {f"module.{k}": v for k, v in reference.state_dict().items()}
    obj = {wrapper: sd, "epoch": 3} if wrapper else sd
    ckpt = save_legacy(obj, tmp_path / "wrapped.pt")
    state = load_released_state_dict(ckpt)
    assert set(state) == set(reference.state_dict())
    ours, _ = rebuild(import_released(ckpt, tmp_path / "m.pt"))
    compare(reference, ours, use_nrm=True)


def test_current_zip_format_is_accepted_too(full_ckpt, tmp_path) -> None:
    reference, _ = full_ckpt
    ckpt = tmp_path / "zip.pt"
    torch.save(reference.state_dict(), ckpt)
    assert set(load_released_state_dict(ckpt)) == set(reference.state_dict())


# --- refusals ------------------------------------------------------------------------------------
def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_key(full_ckpt, tmp_path) -> None:
    sd = dict(full_ckpt[0].state_dict())
    del sd["enhance_net.iems.2.cell.c4.op.bias"]
    with pytest.raises(ConfigError, match=r"missing key 'enhance_net\.iems\.2\.cell\.c4\.op\.bias'") as exc:
        load_released_state_dict(save_legacy(sd, tmp_path / "x.pt"))
    _one_line_error(exc)


def test_partial_nrm_is_a_missing_key(full_ckpt, tmp_path) -> None:
    sd = {k: v for k, v in full_ckpt[0].state_dict().items() if not k.startswith("denoise_net.nrms.1.")}
    with pytest.raises(ConfigError, match=r"missing key 'denoise_net\.nrms\.1\.c1_d\.op\.weight' \(and 11 more\)"):
        load_released_state_dict(save_legacy(sd, tmp_path / "x.pt"))


def test_extra_key(full_ckpt, tmp_path) -> None:
    sd = dict(full_ckpt[0].state_dict())
    sd["enhance_net.iems.0.cell.c1_d.op.weight"] = torch.zeros(3, 3, 1, 1)  # a skip edge has no weights
    with pytest.raises(ConfigError, match=r"unknown key 'enhance_net\.iems\.0\.cell\.c1_d\.op\.weight'") as exc:
        load_released_state_dict(save_legacy(sd, tmp_path / "x.pt"))
    _one_line_error(exc)
    sd = dict(full_ckpt[0].state_dict(), epoch=3)  # training metadata beside the tensors
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'"):
        load_released_state_dict(save_legacy(sd, tmp_path / "y.pt"))


def test_wrong_shape(full_ckpt, tmp_path) -> None:
    sd = dict(full_ckpt[0].state_dict())
    sd["denoise_net.nrms.0.c2_d.op.weight"] = torch.zeros(6, 6, 1, 1)
    with pytest.raises(ConfigError, match=r"denoise_net\.nrms\.0\.c2_d\.op\.weight: expected shape \(6, 6, 3, 3\), "
                                          r"found \(6, 6, 1, 1\)") as exc:
        load_released_state_dict(save_legacy(sd, tmp_path / "x.pt"))
    _one_line_error(exc)


def test_not_a_ruas_checkpoint(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not a RUAS released checkpoint"):
        load_released_state_dict(save_legacy({"conv.weight": torch.zeros(1)}, tmp_path / "x.pt"))
    with pytest.raises(ConfigError, match="expected a state dict, found list"):
        load_released_state_dict(save_legacy([torch.zeros(1)], tmp_path / "y.pt"))


def test_missing_and_unreadable_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="checkpoint not found"):
        load_released_state_dict(tmp_path / "nope.pt")
    for name, data in [("text.pt", b"hello, world\n"), ("empty.pt", b""), ("noise.pt", bytes(range(256)) * 4)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError, match="not a torch checkpoint") as exc:
            load_released_state_dict(tmp_path / name)
        _one_line_error(exc)


class _Pwn:
    """Unpickling this would create a file: exactly what a checkpoint must never be allowed to do."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("how", ["pickle4", "pickle2", "torch_legacy", "torch_zip"])
def test_code_running_pickle_is_refused(tmp_path, how) -> None:
    pwned = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    payload = {"enhance_net.iems.0.cell.c5.weight": _Pwn(pwned)}
    if how.startswith("pickle"):
        with ckpt.open("wb") as f:
            pickle.dump(payload, f, protocol=int(how[-1]))
    else:
        torch.save(payload, ckpt, _use_new_zipfile_serialization=how == "torch_zip")
    assert not pwned.exists()
    with pytest.raises(ConfigError, match="refused: the file needs arbitrary code to load") as exc:
        load_released_state_dict(ckpt)
    _one_line_error(exc)
    with pytest.raises(ConfigError, match="refused"):
        import_released(ckpt, tmp_path / "out.pt")
    assert not pwned.exists()
    assert not (tmp_path / "out.pt").exists()


def test_refuses_to_overwrite(full_ckpt, tmp_path) -> None:
    _, ckpt = full_ckpt
    out = tmp_path / "m.pt"
    out.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="exists"):
        import_released(ckpt, out)
    assert out.read_bytes() == b"keep me"
    import_released(ckpt, out, overwrite=True)
    assert "state_dict" in load_safe(out)
    with pytest.raises(ConfigError, match="folder"):
        import_released(ckpt, tmp_path, overwrite=True)


# --- the CLI subcommand --------------------------------------------------------------------------
def test_command_via_argparse(iem_ckpt, tmp_path, capsys) -> None:
    reference, ckpt = iem_ckpt
    command = ImportRuasCommand()
    assert command.name == "import-ruas" and "\n" not in command.help
    assert "nasflow import-ruas lol.pt -o ruas-official-lol.pt" in command.epilog
    assert "nasflow enhance photos/ -o out/ --model ruas-official-lol.pt" in command.epilog
    parser = argparse.ArgumentParser(prog="nasflow import-ruas", description=command.description,
                                     epilog=command.epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    command.add_arguments(parser)
    out = tmp_path / "ruas-official-upe.pt"
    assert command.run(parser.parse_args([str(ckpt), "-o", str(out)])) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and str(out) in line and "IEM" in line and "NRM" not in line
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() in line
    n_params = sum(p.numel() for p in reference.parameters())
    assert f"{n_params:,} parameters" in line
    compare(reference, rebuild(out)[0], use_nrm=False)
    with pytest.raises(ConfigError, match="exists"):
        command.run(parser.parse_args([str(ckpt), "--output", str(out)]))
    assert command.run(parser.parse_args([str(ckpt), "--output", str(out), "--overwrite"])) == 0
    with pytest.raises(SystemExit):
        parser.parse_args([str(ckpt)])  # -o is required
