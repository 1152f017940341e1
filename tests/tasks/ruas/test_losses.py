"""RUAS losses: hand-computed values, explicit-loop references, batch behaviour, registry."""

from __future__ import annotations

import math

import pytest
import torch

from nasflow.registries import LOSSES
from nasflow.tasks.ruas import losses as L

OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]


def ramp_t(channels: int = 3) -> torch.Tensor:
    """1xCx3x3, every channel [[0,1,2],[0,1,2],[0,1,2]] (t depends on the column only)."""
    row = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    return row.expand(1, channels, 3, 3).clone()


# -- explicit-loop references ----------------------------------------------------------------
def ref_legacy(t: torch.Tensor, y: torch.Tensor, sigma: float = 0.1) -> float:
    """The released SmoothLoss, batch 1, written out with Python loops."""
    _, c, h, w = t.shape
    # rgb2yCbCr: view(-1, 3) of the C,H,W memory, rows @ mat + bias, then view(1, 3, H, W).
    mem = y[0].reshape(-1).tolist()
    mat = [[0.257, -0.148, 0.439], [0.564, -0.291, -0.368], [0.098, 0.439, -0.071]]
    bias = [16 / 255, 128 / 255, 128 / 255]
    out = []
    for r in range(len(mem) // 3):
        row = mem[3 * r : 3 * r + 3]
        out += [sum(row[i] * mat[i][j] for i in range(3)) + bias[j] for j in range(3)]
    z = [[[out[ch * h * w + i * w + j] for j in range(w)] for i in range(h)] for ch in range(3)]
    factor = -1.0 / 2 * sigma * sigma
    tt = t[0].tolist()
    total = 0.0
    for dy, dx in OFFSETS:
        pix = [(i, j) for i in range(h) for j in range(w) if 0 <= i + dy < h and 0 <= j + dx < w]
        mean_abs = sum(abs(tt[k][i][j] - tt[k][i + dy][j + dx]) for k in range(c) for i, j in pix) / (c * len(pix))
        ws = [math.exp(factor * sum((z[k][i][j] - z[k][i + dy][j + dx]) ** 2 for k in range(3))) for i, j in pix]
        total += sum(wv * mean_abs for wv in ws) / len(pix)
    return total


def ycbcr_pixel(r: float, g: float, b: float) -> tuple[float, float, float]:
    return (
        (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255,
        (128 - 37.797 * r - 74.203 * g + 112.0 * b) / 255,
        (128 + 112.0 * r - 93.786 * g - 18.214 * b) / 255,
    )


def ref_edge_aware(t: torch.Tensor, y: torch.Tensor, sigma: float = 0.1) -> float:
    """The edge-aware term, one image, with Python loops."""
    _, c, h, w = t.shape
    z = [[ycbcr_pixel(*[float(y[0, k, i, j]) for k in range(3)]) for j in range(w)] for i in range(h)]
    tt = t[0].tolist()
    total = 0.0
    for dy, dx in OFFSETS:
        pix = [(i, j) for i in range(h) for j in range(w) if 0 <= i + dy < h and 0 <= j + dx < w]
        acc = 0.0
        for i, j in pix:
            d2 = sum((z[i][j][k] - z[i + dy][j + dx][k]) ** 2 for k in range(3))
            wv = math.exp(-d2 / (2 * sigma * sigma))
            acc += wv * sum(abs(tt[k][i][j] - tt[k][i + dy][j + dx]) for k in range(c))
        total += acc / len(pix)
    return total


# -- fidelity / TV / NRM ---------------------------------------------------------------------
def test_fidelity_hand_value() -> None:
    t = torch.full((1, 3, 3, 3), 0.5, dtype=torch.float64)
    y = torch.full((1, 3, 3, 3), 0.25, dtype=torch.float64)
    assert L.fidelity(t, y).item() == pytest.approx(0.5 * 0.0625)


def test_tv_hand_value() -> None:
    # Each channel [[0,1,2],[3,4,5],[6,7,8]]: vertical diffs 3 (sq 9), horizontal 1 (sq 1).
    x = torch.arange(9, dtype=torch.float64).reshape(1, 1, 3, 3).expand(1, 3, 3, 3)
    assert L.tv(x).item() == pytest.approx(2 * (9 + 1))


def test_nrm_loss_hand_value() -> None:
    out = torch.arange(9, dtype=torch.float64).reshape(1, 1, 3, 3).expand(1, 3, 3, 3)
    u = out + 2.0  # MSE = 4
    terms = L.nrm_loss(out, u)
    assert set(terms) == {"loss", "mse", "tv"}
    assert terms["mse"].item() == pytest.approx(4.0)
    assert terms["tv"].item() == pytest.approx(20.0)
    assert terms["loss"].item() == pytest.approx(1e-7 * 4.0 + 20.0)
    assert L.nrm_loss(out, u, mse_weight=0.5, tv_weight=0.0)["loss"].item() == pytest.approx(2.0)


# -- smoothness: hand values -----------------------------------------------------------------
def test_legacy_is_plain_multi_offset_l1_tv_hand_value() -> None:
    # sigma=0 makes every weight exactly 1, leaving the TV part of the released formula:
    # sum over the 24 offsets of mean|dt| = |dx| -> 10 offsets with |dx|=1, 10 with |dx|=2: 30.
    y = torch.rand(1, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert L.smooth_legacy(ramp_t(), y, sigma=0.0).item() == pytest.approx(30.0)
    # With the released sigma=0.1 the weights are exp(-0.005 * ...) ~ 1: still about 30.
    assert L.smooth_legacy(ramp_t(), y).item() == pytest.approx(30.0, rel=0.02)


def test_edge_aware_hand_value_cuts_across_edges() -> None:
    # y gray, columns [0, 0, 1]: Y differs by 219/255 across the edge (Cb, Cr equal), so the
    # weight there is exp(-0.8588**2 / 0.02) ~ 1e-16; on the same side it is exactly 1.
    # Only dx=+-1 pairs inside columns {0,1} survive: per offset mean = (1*3 + 0) / 2 = 1.5,
    # 10 such offsets -> 15. A flat y gives weights 1 everywhere: 3 channels * 30 = 90.
    y = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(1, 3, 3, 3).clone()
    assert L.smooth_edge_aware(ramp_t(), y).item() == pytest.approx(15.0, abs=1e-9)
    flat = torch.full((1, 3, 3, 3), 0.3, dtype=torch.float64)
    assert L.smooth_edge_aware(ramp_t(), flat).item() == pytest.approx(90.0)
    # The legacy term does not see the edge: its weights stay ~1.
    assert L.smooth_legacy(ramp_t(), y).item() == pytest.approx(30.0, rel=0.02)


def test_smooth_terms_match_loop_references() -> None:
    g = torch.Generator().manual_seed(1)
    y = torch.rand(1, 3, 4, 5, dtype=torch.float64, generator=g)
    t = torch.rand(1, 3, 4, 5, dtype=torch.float64, generator=g)
    assert L.smooth_legacy(t, y).item() == pytest.approx(ref_legacy(t, y), rel=1e-12)
    assert L.smooth_legacy(t, y, sigma=3.0).item() == pytest.approx(ref_legacy(t, y, 3.0), rel=1e-12)
    assert L.smooth_edge_aware(t, y).item() == pytest.approx(ref_edge_aware(t, y), rel=1e-12)
    assert L.smooth_edge_aware(t, y, sigma=0.3).item() == pytest.approx(ref_edge_aware(t, y, 0.3), rel=1e-12)


def test_rgb_to_ycbcr_bt601() -> None:
    white = torch.ones(1, 3, 1, 1, dtype=torch.float64)
    black = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    assert L.rgb_to_ycbcr_bt601(white).flatten().tolist() == pytest.approx([235 / 255, 128 / 255, 128 / 255])
    assert L.rgb_to_ycbcr_bt601(black).flatten().tolist() == pytest.approx([16 / 255, 128 / 255, 128 / 255])


# -- batch behaviour -------------------------------------------------------------------------
def test_edge_aware_is_batch_invariant() -> None:
    g = torch.Generator().manual_seed(2)
    y = torch.rand(3, 3, 8, 7, generator=g)
    t = torch.rand(3, 3, 8, 7, generator=g)
    batch = L.smooth_edge_aware(t, y)
    per_image = torch.stack([L.smooth_edge_aware(t[i : i + 1], y[i : i + 1]) for i in range(3)]).mean()
    assert torch.allclose(batch, per_image, atol=1e-6)


def test_legacy_only_runs_at_batch_1() -> None:
    g = torch.Generator().manual_seed(3)
    y = torch.rand(3, 3, 8, 7, generator=g)
    t = torch.rand(3, 3, 8, 7, generator=g)
    with pytest.raises(ValueError, match="batch 1"):  # the release's view(1, 3, H, W) fails too
        L.smooth_legacy(t, y)
    # At batch 1 the two modes agree.
    one = L.smooth_legacy(t[:1], y[:1])
    assert torch.equal(one, L.smooth_legacy(t[:1], y[:1], batch="pooled"))


def test_legacy_pooled_is_not_batch_invariant() -> None:
    # Image A: flat-ish y (weights ~1) with a textured t; image B: high-contrast y (smaller weights)
    # with a constant t. Batch means of weights and of |dt| are taken separately, so the batch
    # loss is not the mean of the per-image losses.
    t_a = ramp_t().float()
    t_b = torch.full((1, 3, 3, 3), 0.5)
    y_a = torch.full((1, 3, 3, 3), 0.5)
    y_b = (torch.arange(27.0).reshape(1, 3, 3, 3) % 2)  # 0/1 checker in memory order
    t = torch.cat([t_a, t_b])
    y = torch.cat([y_a, y_b])
    batch = L.smooth_legacy(t, y, batch="pooled")
    per_image = (L.smooth_legacy(t_a, y_a) + L.smooth_legacy(t_b, y_b)) / 2
    assert abs(batch.item() - per_image.item()) > 1e-3


# -- gradients / iem_loss / registry ---------------------------------------------------------
@pytest.mark.parametrize("name", ["smooth_legacy", "smooth_edge_aware"])
def test_gradients_flow_to_t(name: str) -> None:
    g = torch.Generator().manual_seed(4)
    y = torch.rand(1, 3, 6, 6, generator=g)
    t = torch.rand(1, 3, 6, 6, generator=g, requires_grad=True)
    terms = L.iem_loss([t.detach(), t], y, smooth=name)
    terms["loss"].backward()
    assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_iem_loss_terms() -> None:
    g = torch.Generator().manual_seed(5)
    y = torch.rand(1, 3, 5, 5, dtype=torch.float64, generator=g)
    t = torch.rand(1, 3, 5, 5, dtype=torch.float64, generator=g)
    terms = L.iem_loss(t, y)  # default: the released smoothness
    assert set(terms) == {"loss", "fidelity", "smooth"}
    assert terms["fidelity"].item() == pytest.approx(L.fidelity(t, y).item())
    assert terms["smooth"].item() == pytest.approx(L.smooth_legacy(t, y).item())
    assert terms["loss"].item() == pytest.approx(terms["fidelity"].item() + terms["smooth"].item())
    ea = L.iem_loss(t, y, smooth="smooth_edge_aware", smooth_weight=2.0, smooth_kwargs={"sigma": 0.2})
    assert ea["smooth"].item() == pytest.approx(L.smooth_edge_aware(t, y, sigma=0.2).item())
    assert ea["loss"].item() == pytest.approx(ea["fidelity"].item() + 2.0 * ea["smooth"].item())


def test_registered_names_resolve() -> None:
    assert LOSSES.get("smooth_edge_aware") is L.smooth_edge_aware
    assert LOSSES.get("smooth_legacy") is L.smooth_legacy
    for fn in (L.fidelity, L.smooth_legacy, L.smooth_edge_aware, L.tv, L.nrm_loss, L.iem_loss):
        assert LOSSES.get(f"ruas.{fn.__name__}") is fn
