"""The journal release of RUAS (Liu et al., TPAMI, "Learning with Nested Scene Modeling and
Cooperative Architecture Search for Low-Light Vision"): its checkpoints ``lol.pt``, ``mit.pt``
and ``darkface.pt`` (98 tensors, 36,653 parameters) run the way the authors' test script runs them.

What differs from the CVPR network (:class:`~nasflow.tasks.ruas.model.RUASNet`):

* the IEM (same genotype) clamps the illumination at ``1e-4`` instead of ``1e-3``;
* the NRM cells have their own searched genotype (:data:`JOURNAL_OPS`), every edge a conv;
* a noise gate decides, per image, whether the NRM runs at all: a plain 5-conv network
  (``3 -> 32 -> 32 -> 32 -> 32 -> 3``, ReLU between) reads the IEM output ``u``; the image counts
  as noisy when the mean absolute value of its output is at least :data:`GATE_THRESHOLD`. A noisy
  image is ``u - n``, any other is ``u`` itself.

The gate looks at the whole image, so the network is not tileable (whole images only), and it is
not searched or trained by nasflow: the released weights are run as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from nasflow.core.genotype import Genotype
from nasflow.core.space import CellSpace
from nasflow.spaces.distill_cell import DistillCellSpace
from nasflow.core.supernet import tag
from nasflow.tasks.ruas.model import PAPER_OPS, RUASNet, RUASOutput, _edges

JOURNAL_T_MIN = 1e-4  # the journal IEM's lower clamp of the illumination
GATE_THRESHOLD = 0.035  # mean |gate output| at or above which an image is denoised (as released)
GATE_WIDTH = 32
GATE_CONVS = 5

# The searched genotypes of the journal release, edges in the order c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4.
JOURNAL_OPS: dict[str, tuple[str, ...]] = {
    "iem": PAPER_OPS["iem"],
    "nrm": ("resconv_1x1", "resconv_3x3", "dilconv_3x3", "resconv_1x1", "resconv_3x3", "conv_3x3", "resconv_3x3"),
}


def journal_genotype(use_nrm: bool = True) -> Genotype:
    """The genotypes of the journal release's checkpoints; IEM only if not ``use_nrm``."""
    space = DistillCellSpace()
    labels = ("iem", "nrm") if use_nrm else ("iem",)
    return Genotype.from_cells(space.name, {label: _edges(space, JOURNAL_OPS[label]) for label in labels},
                               {"source": "RUAS journal release"})


def noise_gate(width: int = GATE_WIDTH, convs: int = GATE_CONVS) -> nn.Sequential:
    """The released gate network: 3x3 convs 3 -> width -> ... -> 3, ReLU between (indices 0, 2, 4, ...)."""
    layers: list[nn.Module] = []
    for k in range(convs):
        c_in = 3 if k == 0 else width
        c_out = 3 if k == convs - 1 else width
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=True))
        if k < convs - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class JournalRUASNet(RUASNet):
    """RUAS as released with the journal paper: IEM, then the NRM only on images the gate calls noisy.

    ``use_nrm=False`` keeps the journal IEM alone (no gate, no NRM). The gate (``noise_gate``) is
    tagged ``gate``: no search group or training phase of the ``ruas`` task touches it.
    """

    t_min = JOURNAL_T_MIN

    def __init__(self, space: CellSpace | None = None, iem_stages: int = 3, nrm_cells: int = 3,
                 iem_channels: int = 3, nrm_channels: int = 6, use_nrm: bool = True, warm_start: bool = True) -> None:
        super().__init__(space, iem_stages=iem_stages, nrm_cells=nrm_cells, iem_channels=iem_channels,
                         nrm_channels=nrm_channels, use_nrm=use_nrm, warm_start=warm_start)
        if use_nrm:
            self.noise_gate = tag(noise_gate(), "gate")

    def halo(self) -> int:
        """Never bounded: the gate averages over the whole image, so tiles could decide differently."""
        if not self.use_nrm:
            return super().halo()
        from nasflow.infer.tiling import NotTileable

        raise NotTileable("the journal RUAS noise gate looks at the whole image: tiles could switch the NRM "
                          "differently")

    def noise_level(self, u: torch.Tensor) -> torch.Tensor:
        """Per image, the mean absolute gate output on the IEM output ``u`` (shape ``[N]``)."""
        return self.noise_gate(u).abs().mean(dim=(1, 2, 3))

    def forward(self, y: torch.Tensor) -> RUASOutput:
        u, ts = self.illumination(y)
        if not self.use_nrm:
            return RUASOutput(u=u, t=ts[-1], ts=ts, n=torch.zeros_like(u), out=u)
        noisy = (self.noise_level(u) >= GATE_THRESHOLD).view(-1, 1, 1, 1)
        # the NRM runs on every image and is masked: no data-dependent branch (CUDA graphs, compile)
        n = torch.where(noisy, self.noise(u), torch.zeros((), dtype=u.dtype, device=u.device))
        return RUASOutput(u=u, t=ts[-1], ts=ts, n=n, out=torch.where(noisy, u - n, u))
