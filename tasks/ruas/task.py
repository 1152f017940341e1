"""The RUAS task: data, the unrolled supernet, reference-free losses, cooperative groups, metrics.

Search groups (``cooperative`` strategy, RUAS sec. 3.3): the IEM group updates the ``iem``
alphas with an architecture loss that includes the NRM loss (the cooperative term), its weights
with the IEM loss alone; the NRM group updates ``nrm`` every ``nrm_every`` steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from nasflow.errors import ConfigError
from nasflow.core.genotype import Genotype
from nasflow.core.supernet import Supernet, weight_parameters
from nasflow.task import GroupSpec, Task, TrainPhase
from nasflow.tasks.ruas.data import PairedFolders, SyntheticLowLight, UnpairedFolder
from nasflow.tasks.ruas.losses import exposure_target, iem_loss, nrm_loss
from nasflow.tasks.ruas.model import RUASNet, RUASOutput, paper_genotype

log = logging.getLogger("nasflow")

SHEET_ROWS = 8  # rows of contact_sheet.png: input | output | reference


@dataclass
class RUASOptions:
    data: str = field(default="synthetic", metadata={"choices": ("synthetic", "folders")})
    root: str | None = None  # folders: the data root (e.g. ../shared/data)
    train: str = "sice_dark"  # folders: unpaired low-light training images, relative to root
    extra_train: list[str] = field(default_factory=list)  # folders: more training folders, relative to root
    # folders: evaluation folders besides eval_low whose images must never train (byte-identical copies are left out)
    held_out: list[str] = field(default_factory=list)
    eval_low: str = "lol/low"  # folders: paired evaluation, relative to root
    eval_high: str | None = "lol/high"  # None: no reference (no-reference statistics only)
    variants: int = field(default=4, metadata={"min": 1})  # synthetic: degraded variants per photo
    crop: int = field(default=64, metadata={"min": 8})
    batch_size: int = field(default=4, metadata={"min": 1})
    max_train_images: int | None = field(default=None, metadata={"min": 2})
    decode_cache: bool = True  # folders: decode each training image once (8-bit kept as uint8 in memory)
    iem_stages: int = field(default=3, metadata={"min": 1})
    nrm_cells: int = field(default=3, metadata={"min": 1})
    use_nrm: bool = True
    warm_start: bool = True  # x_0 = 2x2 max filter of y (released); false: x_0 = y (the paper's ablation)
    smooth: str = field(default="smooth_edge_aware", metadata={"choices": ("smooth_edge_aware", "smooth_legacy")})
    smooth_weight: float = field(default=1.0, metadata={"min": 0.0})
    nrm_every: int = field(default=10, metadata={"min": 1})
    nrm_mse_weight: float = field(default=1e-7, metadata={"min": 0.0})  # released: 1e-7 (TV dominates)
    nrm_tv_weight: float = field(default=1.0, metadata={"min": 0.0})
    fidelity_weight: float = field(default=1.0, metadata={"min": 0.0})
    # what the IEM fidelity pulls the illumination towards: the input (released) or an exposure
    # target that lifts dark regions towards exposure_level and leaves brighter ones unchanged
    fidelity_target: str = field(default="input", metadata={"choices": ("input", "exposure")})
    exposure_level: float = field(default=0.6, metadata={"min": 0.01, "max": 1.0})
    exposure_power: float = field(default=0.7, metadata={"min": 0.0, "max": 1.0})
    exposure_sigma: float = field(default=0.0, metadata={"min": 0.0})
    exposure_luminance: str = field(default="max", metadata={"choices": ("max", "mean")})
    # global exposure before the IEM: each image darker than this mean brightness is scaled up to it (0: off,
    # released RUAS; 0.46: middle grey); see RUASNet.expose
    exposure_key: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    # the scene-adaptive policy (tasks/ruas/exposure.py): the global gain may push the image's highlights (its
    # exposure_highlight quantile of the channel maximum) at most this many stops past full scale (None: no limit)
    exposure_headroom_ev: float | None = field(default=None, metadata={"min": 0.0})
    exposure_highlight: float = field(default=0.99, metadata={"min": 0.5, "max": 1.0})
    # the highlights read as the brightest square of this many pixels a side (a light however few pixels it
    # covers; a lone hot pixel is not one) instead of the exposure_highlight quantile (None)
    exposure_highlight_spot: int | None = field(default=None, metadata={"min": 1})
    # what exposure_key is compared with: the mean of the sRGB values, or Reinhard et al. 2002's log-average of the
    # linear luminance (exposure_key 0.18), the gain then applied in linear light
    exposure_metering: str = field(default="mean", metadata={"choices": ("mean", "reinhard")})
    # what the global exposure does past full scale: None clips each channel (released RUAS, ruas-auto, whose lights
    # stay below full scale); a knee in (0, 1] rolls each pixel's brightest channel off above it and scales R, G and B
    # alike, keeping hue (tasks/ruas/exposure.py's shoulder; calibrated with the key, tasks/ruas/calibration.py)
    exposure_shoulder: float | None = field(default=None, metadata={"min": 0.01, "max": 1.0})
    # the IEM's exposure target lifts a region by at most this many stops (None: no cap); see losses.exposure_target
    exposure_max_lift_ev: float | None = field(default=None, metadata={"min": 0.0})
    # the network's own cap at inference: the illumination is clamped to at least 2 ** -iem_max_lift_ev, so the IEM
    # lifts by at most this many stops whatever its weights (None: the released clamp, 0.001; training keeps it)
    iem_max_lift_ev: float | None = field(default=None, metadata={"min": 0.01})
    # after the network: Lee's local-statistics filter at the noise the lift gave the input's noise ("lee"; no
    # parameters, nasflow.tasks.ruas.denoise) or nothing ("none", released); its window is (2 radius + 1)^2
    denoise: str = field(default="none", metadata={"choices": ("none", "lee")})
    denoise_radius: int = field(default=1, metadata={"min": 1})
    fidelity_stages: str = field(default="last", metadata={"choices": ("last", "all")})  # released: last
    nrm_channels: int = field(default=6, metadata={"min": 1})
    # training the compiled network: both modules at once, or the IEM first and then the NRM on its output
    train_schedule: str = field(default="joint", metadata={"choices": ("joint", "iem_then_nrm")})
    # the network: CVPR 2021 (searched and trained here) or the journal release (noise-gated NRM; runs imported weights)
    variant: str = field(default="cvpr", metadata={"choices": ("cvpr", "journal")})
    # what the NRM is trained towards: "tv" (released: MSE to its input u + TV) or "synthetic" (a crop made noisy
    # with a camera noise model, the IEM run on it, the NRM pulled to the clean crop through the same maps; see
    # nasflow.tasks.ruas.noise)
    nrm_target: str = field(default="tv", metadata={"choices": ("tv", "synthetic")})
    # synthetic: degraded variants of each test photo (None: as many as variants)
    test_variants: int | None = field(default=None, metadata={"min": 1})


def _exposed(model: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The image the IEM's maps refer to (its losses are computed against it): ``y`` after the
    network's global exposure step, or ``y`` itself for networks without one (DDP unwrapped)."""
    return _exposed_like(model, y, y)


def _exposed_like(model: nn.Module, y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``other`` through the global exposure the network gives ``y`` (the gain of :meth:`RUASNet.expose`,
    computed on ``y``, applied to ``other``); ``other`` itself for networks without the step."""
    policy = getattr(getattr(model, "module", model), "exposure", None)
    return other if policy is None else policy.apply(other, policy.gain(y))


def _without_leaks(files: list[Path], eval_folders: list[Path]) -> list[Path]:
    """Training files minus any whose bytes equal an evaluation image (the evaluation pairs
    must never train: LOL's eval15 folder, for one, holds a copy of a LOL test image)."""
    import hashlib

    from nasflow.tasks.ruas.data import list_images

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    held_out = {digest(p) for folder in eval_folders if folder.is_dir() for p in list_images(folder)}
    kept = [p for p in files if digest(p) not in held_out]
    if len(kept) < len(files):
        log.info("left out %d training image(s) identical to evaluation images in %s", len(files) - len(kept),
                 ", ".join(map(str, eval_folders)))
    return kept


def sheet_rows(count: int, rows: int = SHEET_ROWS) -> list[int]:
    """Which of ``count`` evaluation outputs the contact sheet shows: all of them, or ``rows`` spread
    evenly over the set (first and last included). The synthetic test set lists each photo's variants
    together, so the first ``rows`` alone could be one photo seen ``rows`` times."""
    if count <= rows:
        return list(range(count))
    if rows <= 1:
        return [0][:rows]
    return [round(i * (count - 1) / (rows - 1)) for i in range(rows)]


class RUASTask(Task):
    """RUAS low-light enhancement: unrolled IEM (+ NRM) searched cooperatively, reference-free."""

    name = "ruas"
    Options = RUASOptions

    def __init__(self, options: RUASOptions, *, seed: int, device: torch.device) -> None:
        super().__init__(options, seed=seed, device=device)
        self._data: tuple[Dataset, Dataset] | None = None
        if options.data == "folders" and options.root is None:
            raise ConfigError("task_options.root: data 'folders' needs a root folder (e.g. ../shared/data)")

    # Datasets are opened on first use, so that a saved model can be rebuilt for inference
    # (``nasflow enhance``) without its training data.
    @property
    def train_set(self) -> Dataset:
        return self._open()[0]

    @property
    def eval_set(self) -> Dataset:
        return self._open()[1]

    def _open(self) -> tuple[Dataset, Dataset]:
        if self._data is None:
            train, evaluation = self._datasets()
            if len(train) < 2:  # type: ignore[arg-type]
                raise ConfigError("task_options: the training set needs at least 2 images")
            self._data = (train, evaluation)
        return self._data

    def _datasets(self) -> tuple[Dataset, Dataset]:
        o = self.options
        if o.data == "synthetic":
            train = SyntheticLowLight("train", variants=o.variants, crop=o.crop, seed=self.seed)
            test_variants = o.variants if o.test_variants is None else o.test_variants
            return train, SyntheticLowLight("test", variants=test_variants, seed=self.seed)
        if o.root is None:
            raise ConfigError("task_options.root: data 'folders' needs a root folder (e.g. ../shared/data)")
        root = Path(o.root)
        folder = UnpairedFolder(root / o.train, crop=o.crop, seed=self.seed, cache=o.decode_cache)
        for extra in o.extra_train:
            folder.files.extend(UnpairedFolder(root / extra).files)
        evaluation: Dataset = (UnpairedFolder(root / o.eval_low, crop=None, flip=False, seed=self.seed)
                               if o.eval_high is None else PairedFolders(root, low=o.eval_low, high=o.eval_high))
        folder.files = _without_leaks(folder.files, [root / o.eval_low, *(root / h for h in o.held_out)])
        train: Dataset = folder
        if o.max_train_images is not None and len(folder) > o.max_train_images:
            # evenly spread over the (sorted, concatenated) folders, so every folder contributes
            step = len(folder) / o.max_train_images
            train = Subset(folder, [int(i * step) for i in range(o.max_train_images)])
        return train, evaluation

    # -- data -------------------------------------------------------------------------------------
    def _train_images(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``'s crops of every training image in its order, as one tensor (small sets: no
        workers): crops from (seed, epoch, image), the order from (seed, epoch), nothing from the global RNG."""
        data = self.train_set.dataset if isinstance(self.train_set, Subset) else self.train_set
        data.set_epoch(epoch)  # type: ignore[attr-defined]
        # the loader draws its base seed from its generator; without one it would draw from the global RNG
        loader = DataLoader(self.train_set, batch_size=len(self.train_set), shuffle=False,
                            generator=torch.Generator().manual_seed(0))
        batch = next(iter(loader))
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        return images[order].to(self.device)

    def _chunks(self, images: torch.Tensor) -> list[torch.Tensor]:
        bs = self.options.batch_size
        return [images[i : i + bs] for i in range(0, len(images) - bs + 1, bs)] or [images]

    def search_batches(self, epoch: int) -> tuple[Iterable, Iterable]:
        images = self._train_images(epoch)
        half = len(images) // 2
        return self._chunks(images[:half]), self._chunks(images[half:])

    def train_batches(self, epoch: int) -> Iterable:
        return self._chunks(self._train_images(epoch))

    # -- model and losses -------------------------------------------------------------------------
    def build_supernet(self) -> Supernet:
        o = self.options
        if o.variant == "journal":
            from nasflow.tasks.ruas.journal import JournalRUASNet

            return JournalRUASNet(iem_stages=o.iem_stages, nrm_cells=o.nrm_cells, nrm_channels=o.nrm_channels,
                                  use_nrm=o.use_nrm, warm_start=o.warm_start)
        return RUASNet(iem_stages=o.iem_stages, nrm_cells=o.nrm_cells, nrm_channels=o.nrm_channels, use_nrm=o.use_nrm,
                       warm_start=o.warm_start, exposure_key=o.exposure_key,
                       exposure_headroom_ev=o.exposure_headroom_ev, exposure_highlight=o.exposure_highlight,
                       exposure_metering=o.exposure_metering, exposure_highlight_spot=o.exposure_highlight_spot,
                       exposure_shoulder=o.exposure_shoulder, max_lift_ev=o.iem_max_lift_ev, denoise=o.denoise,
                       denoise_radius=o.denoise_radius)

    def iem_terms(self, model: nn.Module, y: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """The IEM loss; it reads only the illuminations, so the NRM is not run."""
        if isinstance(model, RUASNet):
            return self._iem(model.illumination(y)[1], model.expose(y))
        return self._iem(model(y).ts, _exposed(model, y))

    def _iem(self, ts: list[torch.Tensor], y: torch.Tensor) -> Mapping[str, torch.Tensor]:
        o = self.options
        target = None
        if o.fidelity_target == "exposure":
            target = exposure_target(y, level=o.exposure_level, power=o.exposure_power, sigma=o.exposure_sigma,
                                     luminance=o.exposure_luminance, max_lift_ev=o.exposure_max_lift_ev)
        return iem_loss(ts, y, o.smooth, fidelity_weight=o.fidelity_weight, smooth_weight=o.smooth_weight,
                        target=target, all_stages=o.fidelity_stages == "all")

    def nrm_terms(self, model: nn.Module, y: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """The NRM loss, for the NRM's own weights and alphas: the IEM runs without a graph.

        Its gradient with respect to NRM parameters is the same either way (``u`` is the NRM's input
        and its target); what is saved is recording and storing the IEM's graph, which no caller
        of these terms differentiates (the IEM's cooperative arch loss is :meth:`loss`).
        """
        if self.options.nrm_target == "synthetic":
            return self._synthetic_nrm(model, y)
        if isinstance(model, RUASNet):
            with torch.no_grad():
                u, _ = model.illumination(y)
            return self._nrm(u - model.noise(u), u)
        out = model(y)
        return self._nrm(out.out, out.u)

    def _synthetic_nrm(self, model: nn.Module, y: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """``nrm_target: synthetic``: the NRM loss on a (noisy, clean) pair made from the batch
        (:func:`nasflow.tasks.ruas.noise.synthesize`, draws from the task seed and the batch's bytes).

        The IEM runs on the noisy image, as at inference; the target is the clean image through the
        SAME exposure and illumination maps (``clean / (t_0 t)`` with ``t_0`` and ``t`` from the noisy
        input), so the NRM learns to remove the noise and nothing else. The IEM runs without a graph:
        a gradient through ``u = y / t`` would teach the IEM to darken (less lifted noise), so under
        this target the IEM's weights and alphas learn from the IEM loss alone (also in ``joint``
        training and the cooperative arch loss).
        """
        from nasflow.tasks.ruas.noise import batch_generator, nrm_synthetic_loss, synthesize

        pair = synthesize(y, batch_generator(self.seed, y))
        noisy, clean = pair.noisy.to(y.device), pair.clean.to(y.device)
        if isinstance(model, RUASNet):
            with torch.no_grad():
                u, ts = model.illumination(noisy)
            out, t = u - model.noise(u), ts[-1]
        else:
            res = model(noisy)
            out, t = res.out, res.t
        with torch.no_grad():
            target = torch.clamp(_exposed_like(model, noisy, clean) / t, 0.0, 1.0)
        return nrm_synthetic_loss(out, target)

    def _nrm(self, out: torch.Tensor, u: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """The NRM loss of the output ``out`` against the IEM output ``u`` (a target: not differentiated)."""
        o = self.options
        return nrm_loss(out, u.detach(), mse_weight=o.nrm_mse_weight, tv_weight=o.nrm_tv_weight)

    def loss(self, model: nn.Module, batch: torch.Tensor) -> Mapping[str, torch.Tensor]:
        out = model(batch)
        iem = self._iem(out.ts, _exposed(model, batch))
        terms = {f"iem_{k}": v for k, v in iem.items()}
        total = iem["loss"]
        if self.options.use_nrm:
            nrm = (self._synthetic_nrm(model, batch) if self.options.nrm_target == "synthetic"
                   else self._nrm(out.out, out.u))
            terms.update({f"nrm_{k}": v for k, v in nrm.items()})
            total = total + nrm["loss"]
        return {"loss": total, **terms}

    def _cvpr_only(self, what: str) -> None:
        if self.options.variant == "journal":
            raise ConfigError(f"task_options.variant: the journal network runs released weights; {what} it is not "
                              f"supported (its noise gate has no loss here): use variant cvpr")

    def search_groups(self, model: Supernet) -> list[GroupSpec]:
        self._cvpr_only("searching")
        if not self.options.use_nrm:
            return [GroupSpec("iem", ("iem",), ("iem",), loss=self.iem_terms, arch_loss=self.loss)]
        return [
            # cooperative: the IEM architecture is judged by what the NRM makes of its output
            GroupSpec("iem", ("iem",), ("iem",), loss=self.iem_terms, arch_loss=self.loss),
            GroupSpec("nrm", ("nrm",), ("nrm",), loss=self.nrm_terms, arch_loss=self.nrm_terms,
                      every=self.options.nrm_every),
        ]

    def train_phases(self, model: nn.Module) -> list[TrainPhase]:
        self._cvpr_only("training")
        if self.options.train_schedule == "joint" or not self.options.use_nrm:
            return super().train_phases(model)
        return [TrainPhase("iem", weight_parameters(model, "iem"), self.iem_terms),
                TrainPhase("nrm", weight_parameters(model, "nrm"), self.nrm_terms)]

    def named_genotypes(self) -> dict[str, Genotype]:
        """``paper``: the genotypes the RUAS paper found (IEM only for ``use_nrm: false``); for the
        journal variant, those of the journal release."""
        if self.options.variant == "journal":
            from nasflow.tasks.ruas.journal import journal_genotype

            return {"paper": journal_genotype(self.options.use_nrm)}
        return {"paper": paper_genotype(self.options.use_nrm)}

    # -- evaluation -------------------------------------------------------------------------------
    def _eval_items(self) -> Iterable[tuple[str, torch.Tensor, torch.Tensor | None]]:
        for i in range(len(self.eval_set)):  # type: ignore[arg-type]
            item = self.eval_set[i]
            if isinstance(item, tuple):
                low, high, name = item
                yield str(name), low, high
            else:
                yield f"{i:04d}", item, None

    # -- inference ----------------------------------------------------------------------------------
    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        out = model(images)
        return (out.out if isinstance(out, RUASOutput) else out).clamp(0, 1)

    def inference_network(self, model: nn.Module) -> nn.Module:
        """The fused fast path (:func:`nasflow.tasks.ruas.fast.fast_ruas`): same function, less work."""
        from nasflow.tasks.ruas.fast import fast_ruas

        if hasattr(model, "noise_gate"):
            return model  # the journal release's per-image gate: the fast path has no place for it
        # channels-last pays on CPUs (oneDNN) for the NRM's 6-channel convolutions; the IEM alone works on
        # 3-channel tensors, which run faster contiguous (NCHW); on a GPU NCHW is faster (benchmarks/README.md)
        on_cpu = next(model.parameters()).device.type == "cpu"
        return fast_ruas(model, channels_last=on_cpu and bool(getattr(model, "use_nrm", True)))

    @torch.no_grad()
    def enhance(self, model: nn.Module, low: torch.Tensor) -> torch.Tensor:
        model.eval()
        return self.predict(model, low.unsqueeze(0).to(self.device))[0].cpu()

    @torch.no_grad()
    def _evaluation(self, model: nn.Module) -> tuple[list, list, dict]:
        """(outputs as (name, output, reference, input), per-image rows, means) on the evaluation set."""
        from nasflow.tasks.ruas.metrics import evaluate_pairs

        outputs = [(name, self.enhance(model, low), high, low) for name, low, high in self._eval_items()]
        rows, means = evaluate_pairs(outputs)
        return outputs, rows, means

    @torch.no_grad()
    def evaluate(self, model: nn.Module, genotype: Genotype) -> dict[str, float]:
        """PSNR (rounded 8-bit RGB), SSIM (scikit-image, channel_axis=2, data_range=255) and
        no-reference statistics on the evaluation set; ``identity_*``: the input left unchanged."""
        from nasflow.tasks.ruas.metrics import evaluate_pairs

        outputs, rows, means = self._evaluation(model)
        log.info("evaluation on %d images: PSNR on 8-bit RGB (rounded, not truncated); SSIM = scikit-image "
                 "structural_similarity(channel_axis=2, data_range=255); means over images", len(rows))
        _, identity = evaluate_pairs([(name, low, high, low) for name, _, high, low in outputs])
        metrics = {k: float(v) for k, v in means.items() if isinstance(v, (int, float))}
        metrics.update({f"identity_{k}": float(v) for k, v in identity.items() if isinstance(v, (int, float))})
        return metrics

    def export(self, model: nn.Module, genotype: Genotype, run_dir: Path) -> None:
        """per_image.csv, contact_sheet.png (input | output | reference) and splits.json.

        Evaluates the model again rather than keeping :meth:`evaluate`'s outputs on the task: the
        task holds no state between calls (a second pass over the small evaluation set).
        """
        import json

        from nasflow.atomic import write_text_atomic
        from nasflow.tasks.ruas.metrics import contact_sheet, write_csv

        outputs, rows, means = self._evaluation(model)
        write_csv(rows, run_dir / "per_image.csv", means)
        shown = [outputs[i] for i in sheet_rows(len(outputs))]
        contact_sheet([(name, [low, out, high]) for name, out, high, low in shown], run_dir / "contact_sheet.png")
        write_text_atomic(run_dir / "splits.json", json.dumps(self.split_lists(), indent=1) + "\n")

    def split_lists(self) -> dict[str, list[str]]:
        """Which images trained and which evaluated: written out so figures can be reproduced."""
        if isinstance(self.train_set, SyntheticLowLight) and isinstance(self.eval_set, SyntheticLowLight):
            return {"train": self.train_set.names(), "test": self.eval_set.names()}
        train = self.train_set.dataset if isinstance(self.train_set, Subset) else self.train_set
        files = [str(p) for p in train.files]  # type: ignore[attr-defined]
        if isinstance(self.train_set, Subset):
            files = [files[i] for i in self.train_set.indices]
        evaluated = [name for name, _, _ in self._eval_items()]
        return {"train": files, "test": evaluated}

    @torch.no_grad()
    def samples(self, model: nn.Module) -> dict[str, torch.Tensor]:
        shown = {}
        for k, (name, low, high) in zip(range(2), self._eval_items()):
            row = [low, self.enhance(model, low)] + ([high] if high is not None else [])
            shown[f"{k}_{name}"] = torch.cat(row, dim=2)  # input | output | reference, side by side
        return shown
