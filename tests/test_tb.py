"""TensorBoard logging: the tags documented in nasflow/run/tb.py, read back with TensorBoard's own reader."""

from __future__ import annotations

import inspect
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nasflow.core.genotype import Genotype
from nasflow.core.space import build_space
from nasflow.core.supernet import Supernet
from nasflow.run.tb import NullWriter, Writer, flatten_config, open_writer

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

SIZE_GUIDANCE = {"scalars": 0, "images": 0, "tensors": 0}


class TinyNet(Supernet):
    """One distill supercell, label 'cell', on 2 channels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.cell = build_space("distill").supercell(self.arch, "cell", 2)
        with torch.no_grad():  # away from uniform, so the probabilities differ per op
            self.arch.alphas["cell"].copy_(torch.randn_like(self.arch.alphas["cell"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell(x)


@pytest.fixture(scope="module")
def net() -> TinyNet:
    return TinyNet()


def _read(log_dir: Path) -> EventAccumulator:
    return EventAccumulator(str(log_dir), size_guidance=SIZE_GUIDANCE).Reload()


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def _scalar(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_scalars_each_key_is_its_own_tag(tmp_path: Path) -> None:
    with open_writer(tmp_path) as w:
        w.scalars({"train/loss": 0.5, "train/iem/loss": torch.tensor(0.25), "lr/weights": 0.025}, step=3)
        w.scalars({"train/loss": 0.4}, step=4)
    acc = _read(tmp_path)
    assert _scalar(acc, "train/loss") == [(3, pytest.approx(0.5)), (4, pytest.approx(0.4))]
    assert _scalar(acc, "train/iem/loss") == [(3, pytest.approx(0.25))]
    assert _scalar(acc, "lr/weights") == [(3, pytest.approx(0.025))]


@pytest.mark.parametrize("source", ["supernet", "arch"])
def test_arch_probabilities_per_label_edge_op(tmp_path: Path, net: TinyNet, source: str) -> None:
    with open_writer(tmp_path) as w:
        w.arch(net if source == "supernet" else net.arch, step=7)
    acc = _read(tmp_path)
    graph = net.arch.graph("cell")
    probs = net.arch_probabilities()["cell"]
    tags = set(acc.Tags()["scalars"])
    assert tags == {f"arch/cell/{e.name}/{op}" for e in graph.edges for op in graph.candidates}
    for row, edge in enumerate(graph.edges):
        values = []
        for col, op in enumerate(graph.candidates):
            [(step, value)] = _scalar(acc, f"arch/cell/{edge.name}/{op}")
            assert step == 7
            assert value == pytest.approx(float(probs[row, col]), abs=1e-6)
            values.append(value)
        assert sum(values) == pytest.approx(1.0, abs=1e-5)


def test_genotype_text_is_a_markdown_json_block(tmp_path: Path, net: TinyNet) -> None:
    genotype = net.derive()
    with open_writer(tmp_path) as w:
        w.genotype(genotype, step=2)
    acc = _read(tmp_path)
    assert "genotype/text" in acc.Tags()["tensors"]
    assert acc.SummaryMetadata("genotype/text").plugin_data.plugin_name == "text"
    [event] = acc.Tensors("genotype/text")
    assert event.step == 2
    text = event.tensor_proto.string_val[0].decode("utf-8")
    assert text.startswith("```json\n") and text.endswith("\n```")
    assert Genotype.from_json(text[len("```json\n") : -len("\n```")]) == genotype
    assert json.loads(text[len("```json\n") : -len("\n```")])["cells"]["cell"][0]["op"] == genotype.ops("cell")[0]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_genotype_image_when_dot_exists(tmp_path: Path, net: TinyNet) -> None:
    with open_writer(tmp_path) as w:
        w.genotype(net.derive(), step=2)
    [image] = _read(tmp_path).Images("genotype/image")
    assert image.step == 2
    assert image.width > 10 and image.height > 10
    assert image.encoded_image_string.startswith(b"\x89PNG")


def test_genotype_without_dot_writes_text_only(tmp_path: Path, net: TinyNet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with open_writer(tmp_path) as w:
        w.genotype(net.derive(), step=0)
    acc = _read(tmp_path)
    assert acc.Tags()["images"] == []
    assert "genotype/text" in acc.Tags()["tensors"]


def test_sample_images_chw_and_nchw_are_clamped(tmp_path: Path) -> None:
    chw = torch.full((3, 4, 5), 2.0)  # clamped to white
    nchw = torch.full((2, 1, 4, 5), -1.0)  # clamped to black
    with open_writer(tmp_path) as w:
        w.images({"enhanced": chw, "batch": nchw}, step=5)
    acc = _read(tmp_path)
    assert set(acc.Tags()["images"]) == {"samples/enhanced", "samples/batch"}
    [single] = acc.Images("samples/enhanced")
    assert (single.step, single.width, single.height) == (5, 5, 4)
    assert (_pixels(single.encoded_image_string) == 255).all()
    [batch] = acc.Images("samples/batch")
    assert (batch.step, batch.width, batch.height) == (5, 10, 4)  # add_images tiles the batch in a row
    assert (_pixels(batch.encoded_image_string) == 0).all()


def test_images_reject_bad_shapes(tmp_path: Path) -> None:
    with open_writer(tmp_path) as w, pytest.raises(ValueError, match="samples/x"):
        w.images({"x": torch.rand(2, 4, 4)}, step=0)


def test_hparams_land_in_the_run_folder(tmp_path: Path) -> None:
    config = {"task": "planted", "seed": 0, "search": {"epochs": 2, "derive_rule": None, "groups": {},
                                                       "arch_optimizer": {"betas": [0.5, 0.999], "lr": 3e-4}},
              "train": {"enabled": True}}
    with open_writer(tmp_path) as w:
        w.hparams(config, {"psnr": 21.5, "seconds": torch.tensor(3.0), "note": "not a number"})
    assert all(p.parent == tmp_path for p in tmp_path.rglob("*"))  # run_name='.': no sub-folder
    acc = _read(tmp_path)
    assert _scalar(acc, "hparams/psnr") == [(0, pytest.approx(21.5))]
    assert _scalar(acc, "hparams/seconds") == [(0, pytest.approx(3.0))]
    assert "hparams/note" not in acc.Tags()["scalars"]
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["task"].string_value == "planted"
    assert hparams["search.epochs"].number_value == 2
    assert hparams["search.derive_rule"].string_value == "None"
    assert hparams["search.groups"].string_value == "{}"
    assert hparams["search.arch_optimizer.betas"].string_value == "[0.5, 0.999]"
    assert hparams["search.arch_optimizer.lr"].number_value == pytest.approx(3e-4)


def test_flatten_config_accepts_dataclasses() -> None:
    from nasflow.schema import RunConfig

    flat = flatten_config(RunConfig(task="planted"))
    assert flat["task"] == "planted"
    assert flat["search.weight_optimizer.lr"] == pytest.approx(0.025)
    assert flat["search.arch_optimizer.betas"] == "(0.5, 0.999)"
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())


@pytest.mark.parametrize("log_dir, enabled", [(None, True), ("runs", False)])
def test_null_writer_writes_nothing(tmp_path: Path, net: TinyNet, log_dir: str | None, enabled: bool,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_writer(tmp_path / log_dir if log_dir else None, enabled=enabled) as w:
        assert isinstance(w, NullWriter) and not w.enabled
        w.scalars({"train/loss": 1.0}, step=0)
        w.arch(net, step=0)
        w.genotype(net.derive(), step=0)
        w.images({"x": torch.rand(3, 4, 4)}, step=0)
        w.hparams({"a": 1}, {"m": 1.0})
        w.flush()
    w.close()
    assert list(tmp_path.iterdir()) == []


def test_null_writer_overrides_every_public_method() -> None:
    names = [n for n, _ in inspect.getmembers(Writer, inspect.isfunction) if not n.startswith("_")]
    assert names  # scalars, arch, genotype, images, hparams, flush, close
    for name in names:
        assert name in NullWriter.__dict__, f"NullWriter.{name} would touch a SummaryWriter"


def test_writer_close_is_idempotent(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    assert isinstance(w, Writer) and w.enabled and w.log_dir == tmp_path
    w.scalars({"a": 1.0}, step=0)
    w.close()
    w.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))
