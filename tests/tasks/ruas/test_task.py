"""The RUAS task: a tiny cooperative search, the groups it defines, and its configs."""

from __future__ import annotations

import torch

from nasflow.run.runner import _Progress, load_run_config, search
from nasflow.task import build_task
from nasflow.tasks.ruas.task import RUASTask

TINY = ["task_options.variants=1", "task_options.crop=32", "task_options.batch_size=2", "search.epochs=2",
        "search.hypergradient=finite_difference", "task_options.nrm_every=1"]


def test_two_step_cooperative_search_on_32px_images() -> None:
    cfg = load_run_config("ruas", TINY)
    torch.manual_seed(0)
    task = build_task(cfg, torch.device("cpu"))
    assert isinstance(task, RUASTask)
    weight_batches, arch_batches = task.search_batches(0)
    assert weight_batches[0].shape == (2, 3, 32, 32)
    before = {label: a.detach().clone() for label, a in task.build_supernet().arch.alphas.items()}
    result = search(cfg, task, _Progress(quiet=True))
    genotype = result.model.derive()
    assert genotype.labels == ("iem", "nrm") and all(len(genotype.edges(lb)) == 7 for lb in genotype.labels)
    for label, alpha in result.model.arch.alphas.items():  # both groups moved their alphas
        assert alpha.shape == before[label].shape and not torch.equal(alpha.detach(), before[label])
    assert all(torch.isfinite(torch.tensor(v)) for epoch in result.history for v in epoch.values())


def test_groups_are_cooperative() -> None:
    cfg = load_run_config("ruas", TINY)
    task = build_task(cfg, torch.device("cpu"))
    model = task.build_supernet()
    iem, nrm = task.search_groups(model)
    assert (iem.labels, nrm.labels, nrm.every) == (("iem",), ("nrm",), 1)
    y = task.search_batches(0)[0][0]
    arch_terms = iem.arch_loss(model, y)  # the IEM architecture sees the NRM loss too
    assert "nrm_loss" in arch_terms and "iem_loss" in arch_terms
    (g_iem,) = torch.autograd.grad(arch_terms["loss"], model.arch["iem"], retain_graph=True)
    (g_coop,) = torch.autograd.grad(arch_terms["nrm_loss"], model.arch["iem"])
    assert torch.count_nonzero(g_coop) > 0 and not torch.allclose(g_iem, g_coop)
    # the IEM's own weight loss does not depend on the NRM at all
    (g_none,) = torch.autograd.grad(iem.loss(model, y)["loss"], model.arch["nrm"], allow_unused=True)
    assert g_none is None


def test_group_losses_skip_work_without_changing_their_gradients() -> None:
    """iem_terms runs no NRM and nrm_terms records no IEM graph; values and gradients are those of
    the full forward pass (``model(y)``) that they replace."""
    from nasflow.core.supernet import weight_parameters
    from nasflow.tasks.ruas.losses import nrm_loss

    cfg = load_run_config("ruas", TINY)
    task = build_task(cfg, torch.device("cpu"))
    torch.manual_seed(1)
    model = task.build_supernet()
    y = task.search_batches(0)[0][0]
    o = task.options
    iem_params = [*weight_parameters(model, "iem"), model.arch["iem"]]
    nrm_params = [*weight_parameters(model, "nrm"), model.arch["nrm"]]

    full = model(y)
    iem_full = task._iem(full.ts, y)["loss"]
    nrm_full = nrm_loss(full.out, full.u.detach(), mse_weight=o.nrm_mse_weight, tv_weight=o.nrm_tv_weight)["loss"]
    want_iem = torch.autograd.grad(iem_full, iem_params, retain_graph=True)
    want_nrm = torch.autograd.grad(nrm_full, nrm_params)

    calls = []
    hook = model.nrm_stem.register_forward_hook(lambda *_: calls.append(1))
    iem = task.iem_terms(model, y)["loss"]
    assert calls == []  # the NRM did not run
    hook.remove()
    nrm = task.nrm_terms(model, y)["loss"]
    assert torch.equal(iem, iem_full) and torch.equal(nrm, nrm_full)
    for got, want in zip(torch.autograd.grad(iem, iem_params), want_iem):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    for got, want in zip(torch.autograd.grad(nrm, nrm_params, allow_unused=True), want_nrm):
        assert got is not None and torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    # nothing of the IEM is in the NRM terms' graph: no IEM parameter gets a gradient from them
    assert all(g is None for g in torch.autograd.grad(task.nrm_terms(model, y)["loss"], iem_params,
                                                      allow_unused=True))


def test_batches_are_a_function_of_seed_and_epoch_alone() -> None:
    """What a resumed run relies on: a fresh task rebuilds any epoch's batches from its number alone."""
    cfg = load_run_config("ruas", TINY)
    a = build_task(cfg, torch.device("cpu"))
    a.search_batches(0)
    a.train_batches(0)
    b = build_task(cfg, torch.device("cpu"))
    assert torch.equal(a.search_batches(1)[0][0], b.search_batches(1)[0][0])
    assert torch.equal(a.search_batches(1)[0][0], a.search_batches(1)[0][0])  # no state advanced by a call
    assert not torch.equal(b.search_batches(0)[0][0], b.search_batches(1)[0][0])  # fresh crops per epoch
    rng = torch.get_rng_state()
    a.search_batches(2), a.train_batches(2)
    assert torch.equal(rng, torch.get_rng_state())  # nothing drawn from the global RNG


def test_nrm_loss_weights_come_from_the_options() -> None:
    cfg = load_run_config("ruas", TINY + ["task_options.nrm_mse_weight=2.0", "task_options.nrm_tv_weight=0.5"])
    task = build_task(cfg, torch.device("cpu"))
    model = task.build_supernet()
    y = task.search_batches(0)[0][0]
    terms = task.nrm_terms(model, y)
    assert torch.allclose(terms["loss"], 2.0 * terms["mse"] + 0.5 * terms["tv"])


def test_a_tiny_run_writes_the_evaluation_files(tmp_path) -> None:
    import csv
    import json

    from nasflow.run.runner import run_from_file

    out = run_from_file("ruas", TINY + ["search.hypergradient=first_order", "train.epochs=1", "tensorboard=false"],
                        out=tmp_path / "r", quiet=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"psnr", "ssim", "identity_psnr", "brightness", "loe"} <= set(metrics)
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == metrics["count"] + 1 and rows[-1]["name"] == "mean"
    splits = json.loads((out / "splits.json").read_text())
    assert splits["test"] == [r["name"] for r in rows[:-1]] and not set(splits["train"]) & set(splits["test"])
    assert (out / "contact_sheet.png").is_file() and any((out / "samples").iterdir())


def test_paper_genotype_by_name_builds_the_3438_parameter_network(tmp_path) -> None:
    from nasflow.run.runner import run_from_file

    out = run_from_file("ruas", TINY + ["train.epochs=0", "tensorboard=false"], out=tmp_path / "p", quiet=True,
                        genotype="paper")
    saved = torch.load(out / "model.pt", weights_only=True)
    assert sum(t.numel() for t in saved["state_dict"].values()) == 3438
    assert saved["genotype"]["cells"]["iem"][1]["op"] == "resconv_1x1"


def test_every_shipped_ruas_config_validates() -> None:
    for name in ["ruas", "ruas_paper", "ruas_lol", "ruas_mit"]:
        cfg = load_run_config(name)
        assert cfg.task == "ruas"
    assert load_run_config("ruas_paper").search.hypergradient == "finite_difference"


def test_folder_configs_need_a_root() -> None:
    import pytest

    from nasflow.errors import ConfigError

    with pytest.raises(ConfigError, match="task_options.root"):
        build_task(load_run_config("ruas_lol"), torch.device("cpu"))


def test_lol_config_reads_the_shared_data(tmp_path) -> None:
    from pathlib import Path

    import pytest

    root = Path(__file__).resolve().parents[4] / "shared" / "data"
    if not (root / "lol" / "low").is_dir():
        pytest.skip("../shared/data is not here")
    task = build_task(load_run_config("ruas_lol", [f"task_options.root={root}"]), torch.device("cpu"))
    weight_batches, _ = task.search_batches(0)
    assert weight_batches[0].shape[1:] == (3, 64, 64)
    stems = sorted(p.stem for p in (root / "lol" / "low").iterdir())
    assert [name for name, _, _ in task._eval_items()] == stems


def test_iem_then_nrm_schedule_trains_each_module_on_its_own_loss() -> None:
    from nasflow.core.compile import compile_model
    from nasflow.run.runner import train

    cfg = load_run_config("ruas", TINY + ["task_options.train_schedule=iem_then_nrm", "train.epochs=1"])
    task = build_task(cfg, torch.device("cpu"))
    model = compile_model(task.build_supernet(), task.named_genotypes()["paper"])
    phases = task.train_phases(model)
    assert [p.name for p in phases] == ["iem", "nrm"]
    assert sum(p.numel() for p in phases[0].parameters) == 1161 and sum(p.numel() for p in phases[1].parameters) == 2277
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(cfg, task, model, _Progress(quiet=True))
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert any(n.startswith("iem") for n in moved) and any(n.startswith("nrm") for n in moved)


def test_held_out_folders_never_train(tmp_path) -> None:
    import shutil

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder, n in (("train", 4), ("eval/low", 1), ("eval/high", 1), ("other", 2)):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    shutil.copy(tmp_path / "other" / "1.png", tmp_path / "train" / "copy_of_other.png")
    shutil.copy(tmp_path / "eval" / "low" / "0.png", tmp_path / "train" / "copy_of_eval.png")
    sets = [f"task_options.root={tmp_path}", "task_options.data=folders", "task_options.train=train",
            "task_options.eval_low=eval/low", "task_options.eval_high=eval/high"]
    plain = build_task(load_run_config("ruas", sets), torch.device("cpu"))
    guarded = build_task(load_run_config("ruas", sets + ["task_options.held_out=[other]"]), torch.device("cpu"))
    names = lambda task: sorted(p.name for p in task.train_set.files)  # noqa: E731
    assert names(plain) == ["0.png", "1.png", "2.png", "3.png", "copy_of_other.png"]  # eval_low's copy left out
    assert names(guarded) == ["0.png", "1.png", "2.png", "3.png"]


def test_iem_loss_is_taken_against_the_exposed_image() -> None:
    cfg = load_run_config("ruas", TINY + ["task_options.exposure_key=0.46", "task_options.fidelity_target=exposure"])
    task = build_task(cfg, torch.device("cpu"))
    model = task.build_supernet()
    assert model.exposure is not None and model.exposure.target == 0.46
    y = 0.3 * task.search_batches(0)[0][0]
    _, ts = model.illumination(y)
    want = task._iem(ts, model.expose(y))
    for terms in (task.iem_terms(model, y), {k[4:]: v for k, v in task.loss(model, y).items() if k.startswith("iem_")}):
        torch.testing.assert_close(terms["loss"], want["loss"])
    assert not torch.allclose(task._iem(ts, y)["loss"], want["loss"])


def test_nrm_target_option_validates() -> None:
    import pytest

    from nasflow.errors import ConfigError

    assert build_task(load_run_config("ruas", TINY), torch.device("cpu")).options.nrm_target == "tv"
    with pytest.raises(ConfigError, match="nrm_target"):
        build_task(load_run_config("ruas", TINY + ["task_options.nrm_target=denoise"]), torch.device("cpu"))


def test_synthetic_nrm_target_trains_the_nrm_towards_the_clean_image() -> None:
    """``nrm_target: synthetic``: the NRM loss is MSE to the clean crop through the noisy input's maps,
    the IEM gets no gradient from it, the draws repeat, and a few steps on one batch lower it."""
    from nasflow.core.compile import compile_model
    from nasflow.core.supernet import weight_parameters
    from nasflow.tasks.ruas.noise import batch_generator, synthesize

    cfg = load_run_config("ruas", TINY + ["task_options.nrm_target=synthetic", "task_options.exposure_key=0.46"])
    task = build_task(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    model = compile_model(task.build_supernet(), task.named_genotypes()["paper"])
    y = torch.cat(task.search_batches(0)[0])  # 2 crops of 32 px
    terms = task.nrm_terms(model, y)
    assert set(terms) == {"loss", "mse"}
    torch.testing.assert_close(task.nrm_terms(model, y)["loss"], terms["loss"])  # same batch, same draws
    # by hand: the IEM on the noisy image, the clean one through the same t_0 and t
    pair = synthesize(y, batch_generator(task.seed, y))
    with torch.no_grad():
        u, ts = model.illumination(pair.noisy)
        t0 = torch.clamp(pair.noisy.mean(dim=(1, 2, 3), keepdim=True) / 0.46, model.t_min, 1.0)
        target = torch.clamp(torch.clamp(pair.clean / t0, 0, 1) / ts[-1], 0, 1)
        want = (u - model.noise(u) - target).pow(2).mean()
    torch.testing.assert_close(terms["loss"].detach(), want)
    # the joint loss carries the same NRM term; the IEM's weights get nothing from it
    torch.testing.assert_close(task.loss(model, y)["nrm_loss"].detach(), want)
    iem = weight_parameters(model, "iem")
    assert all(g is None for g in torch.autograd.grad(terms["loss"], iem, allow_unused=True))
    nrm = weight_parameters(model, "nrm")
    opt = torch.optim.Adam(nrm, lr=0.01)
    first = terms["loss"].item()
    for _ in range(10):
        opt.zero_grad()
        loss = task.nrm_terms(model, y)["loss"]
        loss.backward()
        opt.step()
    assert task.nrm_terms(model, y)["loss"].item() < 0.9 * first
# -- the main job's first picture ---------------------------------------------------------------

#: The main job (tasks/ruas.yaml) at a tiny budget: one crop of each training photo, one variant of
#: each test photo, a one-epoch search and training. Too short to judge colours (an untrained
#: network's maps differ per channel): those are checked through the loss below and measured on the
#: full run (the firstrun branch's report).
MAIN_TINY = ["task_options.variants=1", "task_options.test_variants=1", "task_options.crop=32",
             "task_options.batch_size=2", "search.epochs=1", "train.epochs=1"]


def test_sheet_rows_spread_over_the_set() -> None:
    from nasflow.tasks.ruas.task import sheet_rows

    assert sheet_rows(5) == [0, 1, 2, 3, 4]
    assert sheet_rows(24) == [0, 3, 7, 10, 13, 16, 20, 23]  # 3 photos x 8 variants: every photo shown
    assert sheet_rows(24, rows=1) == [0] and sheet_rows(0) == []


def test_main_job_tests_and_shows_several_photos_it_never_trained_on(tmp_path) -> None:
    """The main job's evaluation covers three different photos, none of which trained, and its
    contact sheet shows each (it showed one photo eight times)."""
    import json

    from nasflow.run.runner import run
    from nasflow.tasks.ruas.task import sheet_rows

    cfg = load_run_config("ruas", MAIN_TINY)
    run_dir = run(cfg, out=tmp_path / "run", quiet=True)
    assert (run_dir / "contact_sheet.png").is_file()
    splits = json.loads((run_dir / "splits.json").read_text())
    photos = {split: {name.rsplit("_", 1)[0] for name in names} for split, names in splits.items()}
    assert len(photos["test"]) >= 3 and not photos["test"] & photos["train"]
    evaluation = build_task(cfg, torch.device("cpu")).eval_set
    shown = {evaluation.name(i).rsplit("_", 1)[0] for i in sheet_rows(len(evaluation))}
    assert shown == photos["test"]


def test_main_job_iem_fidelity_asks_for_one_illumination_for_r_g_b() -> None:
    """The illumination map that minimises the main job's IEM fidelity is the same in R, G and B, so
    ``u = y / t`` keeps each pixel's hue. The released fidelity (``t`` towards ``y``, channel by
    channel) asks for a per-channel map, a local white balance: its minimiser here spreads by about
    90 % across channels, and the main job trained with it turned the white cup magenta. (The
    smoothness term, off here, is the same for each channel and only slows the descent.)"""
    from types import SimpleNamespace

    cfg = load_run_config("ruas", TINY + ["task_options.smooth_weight=0"])
    task = build_task(cfg, torch.device("cpu"))
    y = task.search_batches(0)[0][0]
    logit = torch.nn.Parameter(torch.zeros_like(y))

    def free_map(_: torch.Tensor) -> SimpleNamespace:  # the IEM's output as a free tensor
        return SimpleNamespace(ts=[torch.sigmoid(logit)])

    opt = torch.optim.Adam([logit], lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        terms = task.iem_terms(free_map, y)
        terms["loss"].backward()
        opt.step()
    assert float(terms["fidelity"].detach()) < 1e-3  # the descent reached the minimiser
    t = torch.sigmoid(logit.detach())
    spread = (t.amax(dim=1) - t.amin(dim=1)) / t.mean(dim=1)
    assert float(spread.mean()) < 0.05, float(spread.mean())
