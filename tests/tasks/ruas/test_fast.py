"""tasks/ruas/fast.py: the fast RUAS forward equals the compiled network's ``out`` (float32, 1e-5).

Random genotypes of the RUAS space (both labels), the paper genotype, IEM only; odd image sizes;
random weights; the compiled network must be left as it was. Not timed (benchmarks/speed.py).

The bound is 1e-5 absolute for outputs within [-1, 1] and 1e-5 relative to the largest output
beyond: random NRM genotypes with random weights can amplify (three all-skip cells give outputs
around 100), and then the float32 rounding of the compiled network itself (measured against
float64) exceeds 1e-5. A float64 run checks that the fused algebra is exact (1e-10).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasflow.core.compile import compile_model
from nasflow.infer.fastpath import FusedCell, fast_model
from nasflow.core.genotype import GenoEdge, Genotype
from nasflow.spaces.distill_cell import RUAS_OPS, DistillCellSpace
from nasflow.tasks.ruas.fast import FastRUAS, fast_ruas, max_filter2x2_
from nasflow.tasks.ruas.model import PAPER_GENOTYPE, RUASNet, max_filter2x2, paper_genotype

FAST = settings(max_examples=25, deadline=None, database=None)
pytestmark = pytest.mark.usefixtures("single_thread")
ATOL = 1e-5
ruas_ops = st.lists(st.sampled_from(RUAS_OPS), min_size=7, max_size=7)


def genotype(iem: list[str], nrm: list[str] | None) -> Genotype:
    graph = DistillCellSpace().graph()
    cells = {"iem": [GenoEdge(op, e.src, e.dst) for op, e in zip(iem, graph.edges)]}
    if nrm is not None:
        cells["nrm"] = [GenoEdge(op, e.src, e.dst) for op, e in zip(nrm, graph.edges)]
    return Genotype.from_cells("distill", cells)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = 1.0 / p[0].numel() ** 0.5 if p.dim() > 1 else 0.2
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def tame(compiled: nn.Module, y: torch.Tensor) -> nn.Module:
    """Scale the noise head so that ``|n| <= 0.5`` on ``y``: outputs in the range of a trained RUAS."""
    if compiled.use_nrm:
        with torch.no_grad():
            peak = compiled(y).n.abs().max().item()
            if peak > 0.5:
                compiled.nrm_out.weight.mul_(0.5 / peak)
                compiled.nrm_out.bias.mul_(0.5 / peak)
    return compiled


def low_light(seed: int, h: int = 37, w: int = 53, batch: int = 1) -> torch.Tensor:
    return 0.3 * torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def check(compiled: nn.Module, y: torch.Tensor, strict: bool = False) -> FastRUAS:
    """fast == compiled: 1e-5 absolute if ``strict`` or outputs within [-1, 1], else relative."""
    before = snapshot(compiled)
    fast = fast_ruas(compiled)
    with torch.no_grad():
        expected = compiled(y).out
    got = fast(y)
    assert got.shape == y.shape and got.is_contiguous()
    scale = 1.0 if strict else max(1.0, expected.abs().max().item())
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL * scale)
    after = compiled.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    return fast


@pytest.fixture(scope="module")
def supernet() -> RUASNet:
    torch.manual_seed(0)
    return RUASNet()


@pytest.fixture(scope="module")
def supernet_iem() -> RUASNet:
    torch.manual_seed(0)
    return RUASNet(use_nrm=False)


SIZES = [(37, 53), (41, 60), (16, 64), (9, 35)]  # widths: none, 5, 4/8, 7 packable


@given(ruas_ops, ruas_ops, st.integers(0, 10_000), st.sampled_from(SIZES))
@FAST
def test_random_genotypes_match_the_compiled_network(supernet, iem, nrm, seed, size) -> None:
    compiled = randomize(compile_model(supernet, genotype(iem, nrm)), seed).eval()
    y = low_light(seed, *size)
    fast = check(compiled, y)
    check(tame(compiled, y), y, strict=True)
    assert all(isinstance(m, FusedCell) for m in fast.iem_cells)
    assert sum(isinstance(m, FusedCell) for m in fast.nrm) == 3
    y = low_light(seed, 19, 23).double()
    compiled = compiled.double()
    with torch.no_grad():
        expected = compiled(y).out
    torch.testing.assert_close(fast_ruas(compiled)(y), expected, rtol=0,
                               atol=1e-10 * max(1.0, expected.abs().max().item()))


@given(ruas_ops, st.integers(0, 10_000), st.sampled_from([(37, 53), (1, 1), (2, 9), (64, 33), (12, 60)]))
@FAST
def test_iem_only_random_genotypes_match(supernet_iem, iem, seed, size) -> None:
    compiled = randomize(compile_model(supernet_iem, genotype(iem, None)), seed).eval()
    fast = check(compiled, low_light(seed, *size), strict=True)  # u is clamped to [0, 1]
    assert not hasattr(fast, "nrm")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_genotype_matches(supernet, seed) -> None:
    y = low_light(seed, 41, 67, batch=2)
    compiled = tame(randomize(compile_model(supernet, PAPER_GENOTYPE), seed).eval(), y)
    fast = check(compiled, y, strict=True)
    # the NRM chain is folded: the stem is composed with the first cell's 1x1 entry convs (3 -> 12)
    assert fast.nrm[0].weight.shape[:2] == (12, 3)
    assert all(cell.folded_entry for cell in fast.nrm[1:4])
    # default initialisation (no randomize) and the paper genotype, IEM only
    check(compile_model(supernet, PAPER_GENOTYPE).eval(), low_light(seed))
    net = RUASNet(use_nrm=False)
    check(compile_model(net, paper_genotype(use_nrm=False)).eval(), low_light(seed), strict=True)


def test_fast_model_keeps_every_output_field(supernet) -> None:
    compiled = randomize(compile_model(supernet, PAPER_GENOTYPE), 5).eval()
    y = low_light(5)
    with torch.no_grad():
        expected = compiled(y)
    got = fast_model(compiled)(y)
    pairs = [(getattr(got, k), getattr(expected, k)) for k in ("u", "t", "n", "out")] + list(zip(got.ts, expected.ts))
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL * max(1.0, b.abs().max().item()))


def test_max_filter_matches_and_options_pass_through(supernet) -> None:
    x = torch.randn(2, 3, 7, 5)
    assert torch.equal(max_filter2x2_(x), max_filter2x2(x))
    y = low_light(6)
    compiled = tame(randomize(compile_model(supernet, PAPER_GENOTYPE), 6).eval(), y)
    with torch.no_grad():
        expected = compiled(y).out
    for options in ({"merge": "none"}, {"channels_last": False}, {"fold_chains": False}, {"threads": 1}):
        torch.testing.assert_close(fast_ruas(compiled, **options)(y), expected, rtol=0, atol=ATOL)
    with pytest.raises(RuntimeError, match="inference only"):
        fast_ruas(compiled).train()
    with pytest.raises(TypeError, match="RUASNet"):
        fast_ruas(nn.Conv2d(3, 3, 1))


# -- row bands ------------------------------------------------------------------------------------------
@given(ruas_ops, ruas_ops, st.integers(0, 1000), st.sampled_from([2, 3]), st.booleans())
@settings(max_examples=10, deadline=None, database=None)
def test_bands_give_the_one_piece_result(supernet, iem, nrm, seed, bands, use_nrm) -> None:
    net = supernet if use_nrm else RUASNet(use_nrm=False)
    # float64: a band's convolutions sum in another order, which float32 rounds up to 1.3e-6 apart, as far as
    # a halo one row short (9.5e-7 for a dilated 7-op IEM); in float64 the exact halo agrees to 1e-12
    compiled = randomize(compile_model(net, genotype(iem, nrm if use_nrm else None)), seed).eval().double()
    banded = fast_ruas(compiled, bands=bands)
    assert banded.bands == bands and banded.radius is not None
    y = low_light(seed, 4 * bands * banded.radius + 5, 10).double()
    expected = fast_ruas(compiled)(y)
    assert expected.dtype == torch.float64
    torch.testing.assert_close(banded(y), expected, rtol=0, atol=1e-12 * max(1.0, expected.abs().max().item()))
    small = low_light(seed, 7, 10).double()  # too few rows for bands: one piece
    torch.testing.assert_close(banded(small), fast_ruas(compiled)(small), rtol=0, atol=0)


@given(ruas_ops, ruas_ops, st.integers(0, 1000))
@settings(max_examples=10, deadline=None, database=None)
def test_receptive_radius_bounds_the_network(supernet, iem, nrm, seed) -> None:
    compiled = randomize(compile_model(supernet, genotype(iem, nrm)), seed).eval()
    radius = fast_ruas(compiled).radius
    size = 2 * radius + 11
    y = low_light(seed, size, size)
    bumped = y.clone()
    bumped[0, :, size // 2, size // 2] += 0.5
    with torch.no_grad():
        changed = (compiled(bumped).out - compiled(y).out).abs().amax(dim=(0, 1)) > 0
    rows, cols = torch.nonzero(changed, as_tuple=True)
    reach = max((rows - size // 2).abs().max().item(), (cols - size // 2).abs().max().item())
    assert reach <= radius


def test_halo_matches_the_task_and_exact_tiling_works(supernet) -> None:
    from nasflow.infer.tiling import receptive_halo, tiled_apply

    compiled = randomize(compile_model(supernet, PAPER_GENOTYPE), 9).eval()
    fast = fast_ruas(compiled)
    expected = sum(receptive_halo(c) + 1 for c in compiled.iem_cells) + receptive_halo(compiled.nrm_stem)
    expected += sum(receptive_halo(c) for c in compiled.nrm_cells) + receptive_halo(compiled.nrm_out)
    assert fast.halo() == fast.radius == expected == 17  # paper genotype: 3 x (2 + 1) + 1 + 3 x 2 + 1
    y = low_light(9, 45, 60)
    whole = fast(y)
    torch.testing.assert_close(tiled_apply(fast, y, tile=16, halo=fast.halo()), whole, rtol=0, atol=1e-6)


def test_fast_modules_copy_and_pickle(supernet, tmp_path) -> None:
    import copy

    compiled = randomize(compile_model(supernet, PAPER_GENOTYPE), 10).eval()
    y = low_light(10, 200, 30)
    fast = fast_ruas(compiled, bands=2)
    expected = fast(y)  # bands on: a thread pool now exists
    for other in (copy.deepcopy(fast), torch.load(_saved(fast, tmp_path), weights_only=False)):
        torch.testing.assert_close(other(y), expected, rtol=0, atol=0)
    generic = fast_model(compiled)
    torch.testing.assert_close(copy.deepcopy(generic)(y).out, generic(y).out, rtol=0, atol=0)


def _saved(module: nn.Module, folder) -> str:
    path = folder / "fast.pt"
    torch.save(module, path)
    return str(path)


@pytest.mark.parametrize("use_nrm", [True, False])
def test_no_warm_start_matches_and_reaches_one_pixel_less(use_nrm) -> None:
    torch.manual_seed(3)
    warm = compile_model(RUASNet(use_nrm=use_nrm), paper_genotype(use_nrm)).eval()
    cold = compile_model(RUASNet(use_nrm=use_nrm, warm_start=False), paper_genotype(use_nrm)).eval()
    cold.load_state_dict(warm.state_dict())
    y = low_light(4, 33, 29)
    with torch.no_grad():
        assert not torch.allclose(cold(y).out, warm(y).out)  # x_0 = y, not maxfilter(y)
        torch.testing.assert_close(cold.illumination(y)[1][0],
                                   torch.sigmoid(cold.iem_cells[0](y)).clamp(0.001, 1.0), rtol=0, atol=1e-6)
    fast = check(cold, y)
    assert fast.radius == fast_ruas(warm).radius - 1 == cold.halo()


@pytest.mark.parametrize("use_nrm", [True, False])
def test_exposure_key_matches_in_bands_and_refuses_tiles(use_nrm) -> None:
    from nasflow.infer.tiling import NotTileable

    torch.manual_seed(4)
    keyed = tame(compile_model(RUASNet(use_nrm=use_nrm, exposure_key=0.46), paper_genotype(use_nrm)).eval(),
                 low_light(5, 64, 40))
    y = torch.cat([low_light(5, 64, 40), 0.2 + low_light(6, 64, 40)])  # two images, two different gains
    fast = check(keyed, y)
    banded = fast_ruas(keyed, bands=3)  # the mean is taken before the split: bands see the whole image's gain
    torch.testing.assert_close(banded(y), fast(y), rtol=0, atol=ATOL)
    with pytest.raises(NotTileable, match="whole image"):
        fast.halo()
