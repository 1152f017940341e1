"""An independent, plain-PyTorch re-implementation of the released RUAS networks (test reference).

Written from the structure of the authors' releases (CVPR: ``KarelZhang/RUAS`` ``model.py`` /
``operations.py`` / ``test.py``; journal: ``model_enhance/model.py`` and ``test_enhancement.py``),
not from nasflow's cell or compile code, so that comparing the two checks the checkpoint import end
to end. Module names reproduce the released state-dict names exactly:
``enhance_net.iems.{k}.cell.{c1_d..c5}.*``, ``denoise_net.stem.*``, ``denoise_net.nrms.{k}.*``,
``denoise_net.activate.0.*`` and, in the journal release, ``estimation.estimation.{0..8}.*``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The genotypes of the released checkpoints, edges in the order c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4.
IEM_OPS = ("skip_connect", "resconv_1x1", "resdilconv_3x3", "conv_3x3", "conv_3x3", "skip_connect", "conv_3x3")
NRM_OPS = ("resconv_1x1", "resconv_1x1", "resdilconv_3x3", "skip_connect", "resconv_1x1", "resconv_1x1",
           "skip_connect")
JOURNAL_NRM_OPS = ("resconv_1x1", "resconv_3x3", "dilconv_3x3", "resconv_1x1", "resconv_3x3", "conv_3x3",
                   "resconv_3x3")
JOURNAL_KEYS = 98
JOURNAL_PARAMETERS = 36_653


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ConvBlock(nn.Module):
    """Plain biased conv, kept under ``.op``."""

    def __init__(self, c: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        self.op = nn.Conv2d(c, c, kernel, stride=1, padding=dilation * (kernel - 1) // 2, dilation=dilation,
                            bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(ConvBlock):
    """``conv(x) + x``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x) + x


def make_op(name: str, c: int) -> nn.Module:
    if name == "skip_connect":
        return Identity()
    if name == "conv_1x1":
        return ConvBlock(c, 1)
    if name == "conv_3x3":
        return ConvBlock(c, 3)
    if name == "dilconv_3x3":
        return ConvBlock(c, 3, dilation=2)
    if name == "resconv_1x1":
        return ResBlock(c, 1)
    if name == "resconv_3x3":
        return ResBlock(c, 3)
    if name == "resdilconv_3x3":
        return ResBlock(c, 3, dilation=2)
    raise KeyError(name)


class SearchBlock(nn.Module):
    """The distillation block: 7 searched edges, LeakyReLU(0.05), 1x1 fusion ``c5`` of 4C -> C."""

    def __init__(self, channel: int, ops: Sequence[str]) -> None:
        super().__init__()
        self.c1_d = make_op(ops[0], channel)
        self.c1_r = make_op(ops[1], channel)
        self.c2_d = make_op(ops[2], channel)
        self.c2_r = make_op(ops[3], channel)
        self.c3_d = make_op(ops[4], channel)
        self.c3_r = make_op(ops[5], channel)
        self.c4 = make_op(ops[6], channel)
        self.act = nn.LeakyReLU(negative_slope=0.05)
        self.c5 = nn.Conv2d(channel * 4, channel, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distilled_c1 = self.act(self.c1_d(x))
        r_c1 = self.act(self.c1_r(x) + x)
        distilled_c2 = self.act(self.c2_d(r_c1))
        r_c2 = self.act(self.c2_r(r_c1) + r_c1)
        distilled_c3 = self.act(self.c3_d(r_c2))
        r_c3 = self.act(self.c3_r(r_c2) + r_c2)
        r_c4 = self.act(self.c4(r_c3))
        out = torch.cat([distilled_c1, distilled_c2, distilled_c3, r_c4], dim=1)
        return self.c5(out)


class IEM(nn.Module):
    def __init__(self, channel: int, ops: Sequence[str], t_min: float = 0.001) -> None:
        super().__init__()
        self.cell = SearchBlock(channel, ops)
        self.t_min = t_min  # CVPR 0.001, journal 0.0001

    @staticmethod
    def max_operation(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), value=0.0)[:, :, 1:, 1:]  # what is left: one zero row/column, bottom/right
        x = torch.max(x[:, :, :-1, :], x[:, :, 1:, :])
        return torch.max(x[:, :, :, :-1], x[:, :, :, 1:])

    def forward(self, y: torch.Tensor, u: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if k == 0:
            t_hat = self.max_operation(y)
        else:
            t_hat = self.max_operation(u) - 0.5 * (u - y)
        t = torch.clamp(torch.sigmoid(self.cell(t_hat)), self.t_min, 1.0)
        u = torch.clamp(y / t, 0.0, 1.0)
        return u, t


class EnhanceNetwork(nn.Module):
    def __init__(self, stages: int = 3, channel: int = 3, ops: Sequence[str] = IEM_OPS, t_min: float = 0.001) -> None:
        super().__init__()
        self.iems = nn.ModuleList(IEM(channel, ops, t_min) for _ in range(stages))

    def forward(self, y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        us, ts = [], []
        u = torch.ones_like(y)
        for k, iem in enumerate(self.iems):
            u, t = iem(y, u, k)
            us.append(u)
            ts.append(t)
        return us, ts


class DenoiseNetwork(nn.Module):
    def __init__(self, layers: int = 3, channel: int = 6, ops: Sequence[str] = NRM_OPS) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channel, 3, padding=1, bias=True)
        self.nrms = nn.ModuleList(SearchBlock(channel, ops) for _ in range(layers))
        self.activate = nn.Sequential(nn.Conv2d(channel, 3, 3, padding=1, bias=True))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        feat = self.stem(u)
        for nrm in self.nrms:
            feat = nrm(feat)
        return u - self.activate(feat)


class ReleasedRUAS(nn.Module):
    """``forward(y) -> (u, out)``: the IEM output and the final output (``out == u`` without NRM)."""

    def __init__(self, use_nrm: bool = True) -> None:
        super().__init__()
        self.enhance_net = EnhanceNetwork()
        if use_nrm:
            self.denoise_net = DenoiseNetwork()
        self.use_nrm = use_nrm

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        us, _ = self.enhance_net(y)
        u = us[-1]
        return u, (self.denoise_net(u) if self.use_nrm else u)


class Estimation(nn.Module):
    """The journal release's noise estimator, ``estimation.estimation``: 5 convs with ReLUs between."""

    def __init__(self) -> None:
        super().__init__()
        widths = [3, 32, 32, 32, 32, 3]
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1))
            if i < 4:
                layers.append(nn.ReLU(inplace=True))
        self.estimation = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The released noise label of one image: the L1 norm of the estimate over C * H * W."""
        es = self.estimation(x)
        _, c, h, w = x.shape
        return torch.norm(es, 1) / (w * c * h)


class ReleasedJournalRUAS(nn.Module):
    """The journal release. ``forward(y) -> (u, out, labels)``, one image at a time as the authors'
    ``test_enhancement.py`` runs it (batch 1): ``out`` is the denoised image when the image's noise
    label is at least 0.035, else ``u``."""

    THRESHOLD = 0.035

    def __init__(self) -> None:
        super().__init__()
        self.enhance_net = EnhanceNetwork(t_min=0.0001)
        self.denoise_net = DenoiseNetwork(ops=JOURNAL_NRM_OPS)
        self.estimation = Estimation()

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        us, outs, labels = [], [], []
        for image in y.split(1):
            u = self.enhance_net(image)[0][-1]
            label = self.estimation(u)
            labels.append(label.item())
            us.append(u)
            outs.append(self.denoise_net(u) if label.item() >= self.THRESHOLD else u)
        return torch.cat(us), torch.cat(outs), labels
