"""nasflow.run.layout: channels-last search and training on CPUs, the same search either way."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch

from nasflow.errors import ConfigError
from nasflow.run.layout import batch_to, resolve_memory_format
from nasflow.run.runner import _Progress, load_run_config, search
from nasflow.task import build_task

CL = torch.channels_last


def test_auto_is_channels_last_on_a_cpu_and_contiguous_on_a_gpu() -> None:
    assert resolve_memory_format("auto", torch.device("cpu")) == CL
    assert resolve_memory_format("auto", torch.device("cuda")) == torch.contiguous_format
    assert resolve_memory_format("contiguous", torch.device("cpu")) == torch.contiguous_format
    assert resolve_memory_format("channels_last", torch.device("cuda")) == CL


def test_batches_are_converted_wherever_their_images_are() -> None:
    Pair = namedtuple("Pair", "low high")
    image, label = torch.rand(2, 3, 5, 7), torch.arange(2)
    out = batch_to({"a": [image, Pair(image, label)], "b": label}, CL)
    assert out["a"][0].is_contiguous(memory_format=CL) and not out["a"][0].is_contiguous()
    assert isinstance(out["a"][1], Pair) and out["a"][1].low.is_contiguous(memory_format=CL)
    assert out["b"] is label and torch.equal(out["a"][0], image)


def test_a_bad_memory_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="memory_format"):
        load_run_config("ruas", ["memory_format=nhwc"])


def test_a_channels_last_search_is_the_contiguous_search_up_to_rounding() -> None:
    tiny = ["task_options.variants=1", "task_options.crop=32", "task_options.batch_size=2", "search.epochs=2",
            "search.hypergradient=finite_difference", "task_options.nrm_every=1"]
    results = {}
    for fmt in ("channels_last", "contiguous"):
        cfg = load_run_config("ruas", tiny + [f"memory_format={fmt}"])
        torch.manual_seed(0)
        task = build_task(cfg, torch.device("cpu"))
        results[fmt] = search(cfg, task, _Progress(quiet=True)).model
    conv = next(m for m in results["channels_last"].modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=CL) and not conv.weight.is_contiguous()  # really channels-last
    for label, alpha in results["contiguous"].arch.alphas.items():
        torch.testing.assert_close(results["channels_last"].arch.alphas[label], alpha, rtol=0, atol=1e-5)
    assert results["channels_last"].derive() == results["contiguous"].derive()
