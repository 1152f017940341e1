"""``nasflow.infer.cudagraph.GraphedCall``: one captured graph per shape, eager fallback, fresh outputs."""

from __future__ import annotations

import pytest
import torch

from nasflow.infer.cudagraph import GraphedCall

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_tensors_run_eagerly() -> None:
    calls = []
    graphed = GraphedCall(lambda x: calls.append(x.shape) or x * 2)
    x = torch.ones(2, 3)
    assert torch.equal(graphed(x), x * 2) and graphed.captured_shapes == [] and len(calls) == 1


@cuda
def test_one_graph_per_shape_and_replays_equal_eager() -> None:
    fn = lambda x: torch.sigmoid(x * 3 - 1).clamp(0.1, 0.9) + x.mean()  # noqa: E731
    graphed = GraphedCall(fn, max_graphs=2)
    for shape in [(1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 4, 8), (1, 3, 2, 2)]:
        x = torch.randn(shape, device="cuda")
        assert torch.equal(graphed(x), fn(x))
    assert len(graphed.captured_shapes) == 2  # the third shape ran eagerly (max_graphs)


@cuda
def test_returned_tensors_are_not_overwritten_by_the_next_replay() -> None:
    graphed = GraphedCall(lambda x: x + 1)
    a = graphed(torch.zeros(4, device="cuda"))
    graphed(torch.full((4,), 5.0, device="cuda"))
    assert torch.equal(a, torch.ones(4, device="cuda"))


@cuda
def test_a_function_that_cannot_be_captured_falls_back_to_eager() -> None:
    graphed = GraphedCall(lambda x: x * float(x.sum().item()))  # a host sync: capture fails
    x = torch.ones(3, device="cuda")
    assert torch.equal(graphed(x), x * 3.0) and graphed.disabled is not None
    assert torch.equal(graphed(x), x * 3.0)
