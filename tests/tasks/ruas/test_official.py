"""Importing the authors' released RUAS checkpoints: names, formats, refusals, and equal outputs.

The released networks (CVPR 2021 and journal) are re-implemented independently in
``released_reference.py``; random weights saved from them in the legacy torch format are imported,
and the rebuilt nasflow network must reproduce their outputs. With ``NASFLOW_RUAS_RELEASES`` set
to a folder holding the authors' real files, ``test_real_release_*`` check those too.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from nasflow.run.checkpoint import load_safe
from nasflow.core.compile import compile_model
from nasflow.config import from_dict
from nasflow.errors import ConfigError
from nasflow.core.genotype import Genotype
from nasflow.task import build_task
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


def released_model(use_nrm: bool = True, seed: int = 0, journal: bool = False) -> torch.nn.Module:
    """The reference network with random float32 weights, large enough for non-trivial activations."""
    model = ref.ReleasedJournalRUAS() if journal else ref.ReleasedRUAS(use_nrm)
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
    """Rebuild the network from a model file the way ``nasflow.run.runner.evaluate_run`` does."""
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
                             "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(), "release": "CVPR 2021",
                             "modules": "iem+nrm"}
    assert saved["config"]["task_options"]["variant"] == "cvpr"
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
    conversion = convert_released(state, file_name="lol.pt")
    genotype, state_dict = conversion.genotype, conversion.state_dict
    assert conversion.use_nrm and conversion.release.variant == "cvpr" and genotype == paper_genotype(True)
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
    with pytest.raises(ConfigError, match="not a RUAS released checkpoint.*supported: CVPR 2021 release"):
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
    captured = capsys.readouterr()
    line = captured.out.strip()
    assert "\n" not in line and str(out) in line and "IEM" in line and "NRM" not in line
    assert "CVPR 2021 release" in line
    assert captured.err.startswith("nasflow: note: upe.pt: the file holds the IEM alone")
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() in line
    n_params = sum(p.numel() for p in reference.parameters())
    assert f"{n_params:,} parameters" in line
    compare(reference, rebuild(out)[0], use_nrm=False)
    with pytest.raises(ConfigError, match="exists"):
        command.run(parser.parse_args([str(ckpt), "--output", str(out)]))
    assert command.run(parser.parse_args([str(ckpt), "--output", str(out), "--overwrite"])) == 0
    with pytest.raises(SystemExit):
        parser.parse_args([str(ckpt)])  # -o is required


# --- which modules a CVPR file runs --------------------------------------------------------------
@pytest.mark.parametrize("name, use_nrm", [("lol.pt", True), ("upe.pt", False), ("dark.pt", False),
                                           ("UPE.pt", False), ("weights.pt", True)])
def test_cvpr_files_run_as_the_authors_run_them(full_ckpt, tmp_path, name, use_nrm) -> None:
    """All CVPR files hold 76 tensors; the authors' test.py saves the IEM output for upe and dark."""
    reference, ckpt = full_ckpt
    named = tmp_path / name
    named.write_bytes(ckpt.read_bytes())
    ours, saved = rebuild(import_released(named, tmp_path / "m.pt"))
    assert saved["config"]["task_options"]["use_nrm"] is use_nrm
    assert saved["meta"]["modules"] == ("iem+nrm" if use_nrm else "iem")
    assert Genotype.from_dict(saved["genotype"]) == paper_genotype(use_nrm)
    if use_nrm:
        compare(reference, ours, use_nrm=True)
    else:  # the IEM alone: the reference's IEM output u (what test.py saves for upe/dark)
        reference, ours = reference.double().eval(), ours.double().eval()
        y = torch.rand(1, 3, 21, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.4
        with torch.no_grad():
            u_ref, _ = reference(y)
            got = ours(y)
        assert (got.out - u_ref).abs().max().item() < 1e-6
        assert not any(k.startswith("nrm") for k in saved["state_dict"])


@pytest.mark.parametrize("name, module, use_nrm", [("upe.pt", "iem+nrm", True), ("lol.pt", "iem", False)])
def test_module_overrides_the_file_name_rule(full_ckpt, tmp_path, name, module, use_nrm) -> None:
    reference, ckpt = full_ckpt
    named = tmp_path / name
    named.write_bytes(ckpt.read_bytes())
    ours, saved = rebuild(import_released(named, tmp_path / "m.pt", module=module))
    assert saved["config"]["task_options"]["use_nrm"] is use_nrm
    if use_nrm:
        compare(reference, ours, use_nrm=True)


def test_module_iem_nrm_needs_nrm_tensors(iem_ckpt, tmp_path) -> None:
    _, ckpt = iem_ckpt
    with pytest.raises(ConfigError, match=r"--module iem\+nrm: the file holds no NRM tensors") as exc:
        import_released(ckpt, tmp_path / "m.pt", module="iem+nrm")
    _one_line_error(exc)
    with pytest.raises(ConfigError, match="module must be one of iem, iem\\+nrm"):
        import_released(ckpt, tmp_path / "m.pt", module="nrm")
    assert not (tmp_path / "m.pt").exists()


def test_command_notes_why_upe_is_iem_only(full_ckpt, tmp_path, capsys) -> None:
    _, ckpt = full_ckpt
    upe = tmp_path / "upe.pt"
    upe.write_bytes(ckpt.read_bytes())
    command = ImportRuasCommand()
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args([str(upe), "-o", str(tmp_path / "a.pt")])) == 0
    captured = capsys.readouterr()
    assert "IEM (3 stages) only" in captured.out and "1,161 parameters" in captured.out
    assert "authors' test script runs upe.pt as the IEM alone" in captured.err and "--module iem+nrm" in captured.err
    assert command.run(parser.parse_args([str(upe), "-o", str(tmp_path / "b.pt"), "--module", "iem+nrm"])) == 0
    captured = capsys.readouterr()
    assert "IEM (3 stages) + NRM (3 cells)" in captured.out and "3,438 parameters" in captured.out
    assert "IEM + NRM, as --module iem+nrm asks" in captured.err
    with pytest.raises(SystemExit):
        parser.parse_args([str(upe), "-o", "c.pt", "--module", "nrm"])
    assert "upe.pt or dark.pt" in command.description and "--module" in command.description


# --- the journal release -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def journal_ckpt(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = released_model(journal=True, seed=2)
    return model, save_legacy(model.state_dict(), tmp_path_factory.mktemp("journal") / "mit.pt")


def set_gate(reference: torch.nn.Module, images: torch.Tensor, between: tuple[int, int] | None, level: float = 0.0):
    """Scale the reference's last estimation conv so that ``images[between[0]]`` reads clean and
    ``images[between[1]]`` noisy (the threshold halfway, geometrically), or set a constant label."""
    last = reference.estimation.estimation[8]
    with torch.no_grad():
        if between is None:
            last.weight.zero_()
            last.bias.fill_(level)
            return
        _, _, labels = reference(images)
        lo, hi = labels[between[0]], labels[between[1]]
        assert lo < hi
        scale = ref.ReleasedJournalRUAS.THRESHOLD / (lo * hi) ** 0.5
        last.weight.mul_(scale)
        last.bias.mul_(scale)


def compare_journal(reference: torch.nn.Module, ours: torch.nn.Module, y: torch.Tensor) -> list[float]:
    reference, ours = reference.double().eval(), ours.double().eval()
    with torch.no_grad():
        u_ref, out_ref, labels = reference(y.double())
        got = ours(y.double())
        levels = ours.noise_level(got.u)
    assert (got.u - u_ref).abs().max().item() < 1e-6
    assert (got.out - out_ref).abs().max().item() < 1e-6
    assert torch.allclose(levels, torch.tensor(labels, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    return labels


def test_journal_reference_layout() -> None:
    sd = ref.ReleasedJournalRUAS().state_dict()
    assert len(sd) == ref.JOURNAL_KEYS == 98
    assert sum(t.numel() for t in sd.values()) == ref.JOURNAL_PARAMETERS == 36_653
    assert sum(k.startswith("estimation.estimation.") for k in sd) == 10
    assert "denoise_net.nrms.0.c2_r.op.weight" in sd  # the key the CVPR layout does not know


def test_journal_import_matches_reference_with_the_gate_on_and_off(journal_ckpt, tmp_path) -> None:
    g = torch.Generator().manual_seed(11)
    y = torch.cat([torch.rand(1, 3, 29, 23, generator=g) * 0.05, torch.rand(1, 3, 29, 23, generator=g) * 0.6])
    for case, expected in [("off", [False, False]), ("on", [True, True]), ("per-image", [False, True])]:
        reference = copy.deepcopy(journal_ckpt[0])
        if case == "per-image":
            _, _, labels = reference(y)
            set_gate(reference, y, (0, 1) if labels[0] < labels[1] else (1, 0))
            expected = [labels[0] > labels[1], labels[0] < labels[1]]
        else:
            set_gate(reference, y, None, level=1.0 if case == "on" else 0.0)
        ckpt = save_legacy(reference.state_dict(), tmp_path / f"mit-{case}.pt")
        ours, saved = rebuild(import_released(ckpt, tmp_path / f"journal-{case}.pt"))
        assert saved["config"]["task_options"]["variant"] == "journal"
        assert saved["meta"]["release"] == "journal" and saved["meta"]["modules"] == "iem+nrm"
        assert sum(t.numel() for t in saved["state_dict"].values()) == 36_653
        labels = compare_journal(reference, ours, y)
        noisy = [label >= ref.ReleasedJournalRUAS.THRESHOLD for label in labels]
        assert noisy == expected, case  # "per-image": one image denoised, the other not
        with torch.no_grad():
            got = ours(y.double())
        for i, is_noisy in enumerate(noisy):
            if is_noisy:
                assert (got.out[i] - got.u[i]).abs().mean() > 0.01
            else:
                assert torch.equal(got.out[i], got.u[i])


def test_journal_runs_through_enhance(journal_ckpt, tmp_path) -> None:
    """The imported journal model through ``nasflow enhance`` (whole images: the gate sees all of it)."""
    from PIL import Image

    from nasflow.cli import main
    from nasflow.infer.inference import load_model

    reference, ckpt = journal_ckpt
    model_file = import_released(ckpt, tmp_path / "ruas-journal-mit.pt")
    enhancer = load_model(model_file, device="cpu", tile=16)
    assert enhancer.halo is None  # never tiled
    image = (torch.rand(40, 37, 3, generator=torch.Generator().manual_seed(4)) * 0.3).numpy()
    got = enhancer.enhance_rgb(image)
    with torch.no_grad():
        _, out_ref, _ = reference.float().eval()(torch.from_numpy(image).permute(2, 0, 1)[None])
    assert abs(got - out_ref[0].clamp(0, 1).permute(1, 2, 0).numpy()).max() < 1e-5
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray((image * 255).astype("uint8")).save(photos / "a.png")
    assert main(["enhance", str(photos), "-o", str(tmp_path / "out"), "--model", str(model_file), "--quiet"]) == 0
    assert (tmp_path / "out" / "a.png").is_file()


def test_journal_module_iem_keeps_the_journal_iem(journal_ckpt, tmp_path) -> None:
    """``--module iem``: the journal IEM alone, with its own illumination clamp (1e-4, CVPR 1e-3)."""
    reference = copy.deepcopy(journal_ckpt[0])
    with torch.no_grad():  # illuminations near sigmoid(-8) = 3e-4: between the two releases' clamps
        for iem in reference.enhance_net.iems:
            iem.cell.c5.bias.fill_(-8.0)
    ckpt = save_legacy(reference.state_dict(), tmp_path / "darkface.pt")
    ours, saved = rebuild(import_released(ckpt, tmp_path / "m.pt", module="iem"))
    assert saved["config"]["task_options"]["variant"] == "journal"
    assert saved["config"]["task_options"]["use_nrm"] is False
    reference, ours = reference.double().eval(), ours.double().eval()
    g = torch.Generator().manual_seed(8)
    for scale in (0.3, 2e-4):  # 2e-4: y / t below 1, so the clamp shows
        y = torch.rand(1, 3, 19, 13, generator=g, dtype=torch.float64) * scale
        with torch.no_grad():
            u_ref, _, _ = reference(y)
            got = ours(y).out
        assert (got - u_ref).abs().max().item() < 1e-6
        if scale < 1e-3:
            assert ((u_ref > 0.2) & (u_ref < 0.99)).double().mean() > 0.2  # not saturated: the clamp matters


def test_journal_variant_is_not_searched_or_trained() -> None:
    cfg = from_dict(RunConfig, {"task": "ruas", "task_options": {"variant": "journal"}})
    task = build_task(cfg, torch.device("cpu"))
    model = task.build_supernet()
    with pytest.raises(ConfigError, match="variant: the journal network runs released weights"):
        task.search_groups(model)
    with pytest.raises(ConfigError, match="training it is not supported"):
        task.train_phases(model)


# --- files nasflow cannot map --------------------------------------------------------------------
def test_journal_file_without_its_gate_names_what_was_found(journal_ckpt, tmp_path) -> None:
    sd = {k: v for k, v in journal_ckpt[0].state_dict().items() if not k.startswith("estimation.")}
    with pytest.raises(ConfigError) as exc:
        load_released_state_dict(save_legacy(sd, tmp_path / "lol.pt"))
    message = _one_line_error(exc)
    assert "missing key 'estimation.estimation.0.weight' (and 9 more)" in message
    assert "88 tensors (enhance_net 36, denoise_net 52)" in message and "closest to the journal layout" in message
    assert "CVPR 2021 release (lol.pt, upe.pt, dark.pt): 76 tensors" in message
    assert "journal release (lol.pt, mit.pt, darkface.pt): 98 tensors" in message


def test_unknown_layout_names_the_supported_releases(full_ckpt, tmp_path) -> None:
    sd = dict(full_ckpt[0].state_dict())
    sd["denoise_net.nrms.3.c5.weight"] = torch.zeros(6, 24, 1, 1)  # a fourth NRM cell: no release has one
    with pytest.raises(ConfigError) as exc:
        load_released_state_dict(save_legacy(sd, tmp_path / "x.pt"))
    message = _one_line_error(exc)
    assert "unknown key 'denoise_net.nrms.3.c5.weight'" in message and "77 tensors" in message
    assert "supported:" in message and "journal release" in message


# --- the authors' real files (../shared/releases, or NASFLOW_RUAS_RELEASES=folder) -----------------
ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_RELEASES = ROOT.parent / "shared" / "releases"
#: in the CVPR repository but not a network its test script runs (a stem and NRM cells alone)
NOT_A_RELEASE = ("denoise",)
#: (release, file stem, dev set, PSNR, SSIM): the releases README's figures, which the authors' own code gives
#: (CVPR exactly; journal mit.pt at 51 dB from the authors' output, whose script truncates where we round)
FIGURES = [("cvpr", "lol", "lol", 15.98, 0.651), ("cvpr", "upe", "mit", 20.20, 0.925),
           ("journal", "mit", "mit", 21.53, 0.914)]


def _releases_dir() -> Path | None:
    """``NASFLOW_RUAS_RELEASES`` when set, else ``../shared/releases`` when it exists (CI), else None."""
    if os.environ.get("NASFLOW_RUAS_RELEASES"):
        return Path(os.environ["NASFLOW_RUAS_RELEASES"])
    return DEFAULT_RELEASES if DEFAULT_RELEASES.is_dir() else None


RELEASES_DIR = _releases_dir()
needs_releases = pytest.mark.skipif(RELEASES_DIR is None, reason=f"no released checkpoints: {DEFAULT_RELEASES} "
                                    "is absent and NASFLOW_RUAS_RELEASES is not set")
needs_data = pytest.mark.skipif(not (DATA / "mit" / "low").is_dir(), reason="../shared/data is absent")


def _real_files() -> list[Path]:
    """The released networks under :data:`RELEASES_DIR` (any depth), not the NRM-only ``denoise.pt``."""
    files = sorted(p for p in RELEASES_DIR.rglob("*.pt") if p.stem.lower() not in NOT_A_RELEASE)
    if not files:
        pytest.fail(f"{RELEASES_DIR} (the released checkpoints) holds no .pt file")
    return files


def _is_journal(state: dict) -> bool:
    return any(k.startswith("estimation.") for k in state)


def _authors_network(state: dict) -> torch.nn.Module:
    """The reference network the file's layout belongs to, loaded strictly (the authors' load_state_dict)."""
    network = ref.ReleasedJournalRUAS() if _is_journal(state) else ref.ReleasedRUAS(
        any(k.startswith("denoise_net.") for k in state))
    network.load_state_dict(state, strict=True)
    return network.eval()


def _authors_output(network: torch.nn.Module, stem: str, y: torch.Tensor) -> torch.Tensor:
    """What the authors' test scripts save: CVPR u_list[-2] (the IEM) for upe/dark, else the last."""
    with torch.no_grad():
        if isinstance(network, ref.ReleasedJournalRUAS):
            return network(y)[1]
        u, out = network(y)
    return u if stem in ("upe", "dark") else out


def _test_images() -> list[torch.Tensor]:
    """Two random dark images and a 96x128 crop of the first dev lol and mit photo (crops: whole photos in
    float64 through both networks take minutes on a 2-core CI machine; the figures test runs whole photos)."""
    from nasflow.infer.imageio import read_image

    g = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 3, 48, 64, generator=g) * 0.3, torch.rand(1, 3, 33, 17, generator=g) * 0.1]
    for folder in (DATA / "lol" / "low", DATA / "mit" / "low"):
        if folder.is_dir():
            photo = torch.from_numpy(read_image(sorted(folder.iterdir())[0]).rgb.copy()).permute(2, 0, 1)[None]
            top, left = (photo.shape[2] - 96) // 2, (photo.shape[3] - 128) // 2
            images.append(photo[:, :, top:top + 96, left:left + 128].float())
    return images


@needs_releases
def test_real_release_matches_the_authors_forward(tmp_path) -> None:
    from nasflow.infer.models import load_network

    for path in _real_files():
        state = load_released_state_dict(path)
        authors = _authors_network(state).double()
        loaded = load_network(import_released(path, tmp_path / f"{path.parent.name}-{path.name}"))
        ours = loaded.network.double().eval()
        gate = set()
        for y in _test_images():
            y = y.double()
            with torch.no_grad():
                got = ours(y).out
                if _is_journal(state):
                    gate.add(authors(y)[2][0] >= ref.ReleasedJournalRUAS.THRESHOLD)
            want = _authors_output(authors, path.stem.lower(), y)
            assert (got - want).abs().max().item() < 1e-5, path
        if _is_journal(state) and DATA.is_dir():  # the random images read noisy, the photo crops clean
            assert gate == {True, False}, (path, "the noise gate took one branch only")


@needs_releases
def test_real_denoise_file_is_refused_by_name() -> None:
    """``cvpr/denoise.pt`` (NRM cells, no IEM) is not a network the authors run: the import says what it holds."""
    path = next(iter(sorted(RELEASES_DIR.rglob("denoise.pt"))), None)
    if path is None:
        pytest.skip(f"no denoise.pt under {RELEASES_DIR}")
    with pytest.raises(ConfigError) as exc:
        load_released_state_dict(path)
    message = _one_line_error(exc)
    assert "not a RUAS released checkpoint" in message and "40 key(s)" in message and "supported:" in message


@needs_releases
@needs_data
@pytest.mark.parametrize("release, stem, set_name, psnr, ssim", FIGURES, ids=[f"{r}-{s}-on-{d}" for r, s, d, *_ in
                                                                              FIGURES])
def test_real_release_figures_on_the_dev_pairs(tmp_path, release, stem, set_name, psnr, ssim) -> None:
    """The releases README's figures on the dev pairs (data README protocol), through the benchmark's scoring."""
    from nasflow.infer.inference import load_model

    quality = _load_quality()
    files = [p for p in _real_files() if p.stem.lower() == stem
             and _is_journal(load_released_state_dict(p)) == (release == "journal")]
    if not files:
        pytest.skip(f"no {release} {stem}.pt under {RELEASES_DIR}")
    enhancer = load_model(import_released(files[0], tmp_path / f"{release}-{stem}.nasflow.pt"), device="cpu")
    measured_psnr, measured_ssim, _ = quality.score(enhancer, DATA / set_name)
    assert abs(measured_psnr - psnr) <= 0.01 and abs(measured_ssim - ssim) <= 0.001, (files[0], measured_psnr,
                                                                                     measured_ssim)


def _load_quality():  # noqa: ANN202
    """``benchmarks/quality.py`` (the data README's protocol), loaded by path: benchmarks/ is not a package."""
    spec = importlib.util.spec_from_file_location("nasflow_benchmark_quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
