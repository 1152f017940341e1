"""Image data for low-light enhancement: real folders and an embedded synthetic default.

* :func:`read_image` -- any common image file -> float32 CHW RGB tensor in ``[0, 1]``.
* :func:`list_images` -- the image files of a folder, sorted, hidden files skipped.
* :class:`UnpairedFolder` -- low-light images only (reference-free training); returns ``y``.
* :class:`PairedFolders` -- ``low/`` + ``high/`` matched by file stem; returns ``(low, high, stem)``.
* :class:`SyntheticLowLight` -- the embedded default: clean photos bundled inside the
  scikit-image wheel, darkened on the fly (a shorter exposure in linear light with
  Poisson-Gaussian sensor noise);
  returns ``(low, high, name)``. Needs no network and no data on disk.

Randomness (crops, flips, degradations) is derived from ``(seed, epoch, index)`` rather than a
global generator, so an item is the same whichever DataLoader worker loads it; call
``set_epoch(epoch)`` to get fresh crops/flips each epoch.

The datasets are registered in :data:`nasflow.registries.DATASETS` as ``ruas.unpaired``,
``ruas.paired`` and ``ruas.synthetic`` when this module is imported.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from nasflow.errors import NasflowError
from nasflow.infer.imageio import IMAGE_SUFFIXES, ImageError
from nasflow.infer.imageio import read_image as decode_image
from nasflow.registries import DATASETS

IMAGE_EXTENSIONS = IMAGE_SUFFIXES
"""The suffixes :func:`list_images` takes: the engine's (:data:`nasflow.infer.imageio.IMAGE_SUFFIXES`),
so a folder trains on exactly the files ``nasflow enhance`` would read from it."""


# -- reading ---------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image as a float32 ``(3, H, W)`` RGB tensor in ``[0, 1]``.

    Decoded by the engine's one decoder (:func:`nasflow.infer.imageio.read_image`): the format
    from the content, 8- or 16-bit (16-bit scale by 65535), gray replicated to 3 channels, alpha
    dropped (not composited), palettes expanded, the first frame of a multi-frame file, EXIF
    orientation applied. An unreadable or corrupt file raises :class:`NasflowError` naming it.
    """
    try:
        loaded = decode_image(path)
    except ImageError as exc:
        raise ImageError(exc.path, exc.problem) from None  # one line naming the file, no decoder traceback
    return torch.from_numpy(np.ascontiguousarray(loaded.rgb.transpose(2, 0, 1)))


def list_images(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """The image files of ``folder`` (optionally recursive), sorted by relative path.

    Extensions are matched case-insensitively; names (files or, when recursive, folders)
    starting with ``.`` are skipped. Raises :class:`NasflowError` for a missing folder or
    one without images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NasflowError(f"image folder not found: {root}")
    found: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    found.append(Path(dirpath) / name)
    else:
        for entry in root.iterdir():
            if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(entry)
    if not found:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise NasflowError(f"no images ({exts}) in folder {root}{' (recursive)' if recursive else ''}")
    return sorted(found, key=lambda q: q.relative_to(root).as_posix())


# -- seeded augmentation ----------------------------------------------------------------------


def _generator(*keys: object) -> torch.Generator:
    """A torch.Generator seeded from a stable hash of ``keys`` (same in every process)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return g


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _crop_size(crop: int | Sequence[int] | None) -> tuple[int, int] | None:
    if crop is None:
        return None
    if isinstance(crop, int):
        size = (crop, crop)
    else:
        size = tuple(int(c) for c in crop)
        if len(size) != 2:
            raise NasflowError(f"crop must be an int or (height, width), got {crop!r}")
    if min(size) <= 0:
        raise NasflowError(f"crop must be positive, got {crop!r}")
    return size  # type: ignore[return-value]


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reflect-pad ``(C, H, W)`` (symmetrically) to at least ``height x width``.

    Repeats the reflection for images less than half the target size; a 1-pixel dimension
    (which cannot be reflected) is replicated.
    """
    while x.shape[-2] < height or x.shape[-1] < width:
        h, w = x.shape[-2:]
        dh, dw = max(0, height - h), max(0, width - w)
        mode = "reflect" if (dh == 0 or h > 1) and (dw == 0 or w > 1) else "replicate"
        if mode == "reflect":
            dh, dw = min(dh, h - 1), min(dw, w - 1)
        pads = (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)
        x = F.pad(x.unsqueeze(0), pads, mode=mode).squeeze(0)
    return x


def random_crop_flip(
    tensors: Sequence[torch.Tensor],
    crop: tuple[int, int] | None,
    flip: bool,
    g: torch.Generator,
) -> list[torch.Tensor]:
    """The same random crop (after reflect-padding small images) and flips on every tensor."""
    out = list(tensors)
    if crop is not None:
        ch, cw = crop
        out = [pad_to(t, ch, cw) for t in out]
        h, w = out[0].shape[-2:]
        top = int(torch.randint(0, h - ch + 1, (), generator=g))
        left = int(torch.randint(0, w - cw + 1, (), generator=g))
        out = [t[..., top : top + ch, left : left + cw] for t in out]
    if flip:
        hflip, vflip = (torch.rand(2, generator=g) < 0.5).tolist()
        dims = [d for d, on in ((-1, hflip), (-2, vflip)) if on]
        if dims:
            out = [t.flip(dims) for t in out]
    return [t.contiguous() for t in out]


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """A cached uint8 image (or crop) as float32 in [0, 1], equal to what ``read_image`` decodes."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


class _Seeded:
    """Per-(seed, epoch, index) randomness shared by the datasets."""

    seed: int
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        """Use fresh crops/flips for ``epoch`` (deterministic across workers)."""
        self.epoch = int(epoch)

    def _aug_generator(self, index: int) -> torch.Generator:
        return _generator("aug", self.seed, self.epoch, index)


# -- folders ---------------------------------------------------------------------------------


@DATASETS.register("ruas.unpaired")
class UnpairedFolder(_Seeded, Dataset):
    """Low-light images of a folder, for reference-free training; an item is a ``(3, h, w)`` tensor.

    ``crop`` (int or ``(h, w)``) takes a random crop, reflect-padding smaller images;
    ``flip`` adds random horizontal and vertical flips. Both are drawn from
    ``(seed, epoch, index)``. Without ``crop`` items keep their own size.

    ``cache`` decodes every file once and keeps it in memory, 8-bit images as uint8 (a 512x512
    frame is 0.75 MB); each item is then cropped and flipped from the cache and only the crop is
    converted to float. Items are bitwise the same as without the cache.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        crop: int | Sequence[int] | None = None,
        flip: bool = True,
        recursive: bool = False,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.files = list_images(self.folder, recursive=recursive)
        self.crop = _crop_size(crop)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.epoch = 0
        self.cache = bool(cache)
        self._decoded: dict[Path, torch.Tensor] = {}  # keyed by path: callers may edit ``files``

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, path: Path) -> torch.Tensor:
        """The decoded image: float32 in [0, 1], or from the cache uint8 when it is 8-bit."""
        if not self.cache:
            return read_image(path)
        hit = self._decoded.get(path)
        if hit is None:
            y = read_image(path)
            levels = torch.round(y * 255.0)
            # 8-bit images round-trip exactly (y was level / 255 in float32); others stay float
            hit = levels.to(torch.uint8) if torch.equal(levels / 255.0, y) else y
            self._decoded[path] = hit
        return hit

    def __getitem__(self, index: int) -> torch.Tensor:
        y = self._decode(self.files[index])
        if self.crop is None and not self.flip:
            return _as_float(y)
        if self.crop is not None and (y.shape[-2] < self.crop[0] or y.shape[-1] < self.crop[1]):
            y = _as_float(y)  # reflect padding works on floats
        return _as_float(random_crop_flip([y], self.crop, self.flip, self._aug_generator(index))[0])


@DATASETS.register("ruas.paired")
class PairedFolders(_Seeded, Dataset):
    """``root/low`` + ``root/high`` images matched by file stem; items are ``(low, high, stem)``.

    No crop or flip by default (evaluation); with ``crop``/``flip`` the same crop and flips
    apply to both images. Unmatched or duplicated stems raise :class:`NasflowError`.
    ``low``/``high`` may be absolute folders.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = ".",
        low: str | os.PathLike[str] = "low",
        high: str | os.PathLike[str] = "high",
        crop: int | Sequence[int] | None = None,
        flip: bool = False,
        seed: int = 0,
    ) -> None:
        self.low_dir = Path(root) / low
        self.high_dir = Path(root) / high
        lows = self._by_stem(self.low_dir)
        highs = self._by_stem(self.high_dir)
        only_low = sorted(set(lows) - set(highs))
        only_high = sorted(set(highs) - set(lows))
        if only_low or only_high:
            parts = []
            if only_low:
                parts.append(f"in {self.low_dir} only: {_preview(only_low)}")
            if only_high:
                parts.append(f"in {self.high_dir} only: {_preview(only_high)}")
            raise NasflowError("unmatched image stems; " + "; ".join(parts))
        self.stems = sorted(lows)
        self.pairs = [(lows[s], highs[s]) for s in self.stems]
        self.crop = _crop_size(crop)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.epoch = 0

    @staticmethod
    def _by_stem(folder: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for f in list_images(folder):
            if f.stem in out:
                raise NasflowError(f"two images with stem '{f.stem}' in {folder}: {out[f.stem].name}, {f.name}")
            out[f.stem] = f
        return out

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        low_path, high_path = self.pairs[index]
        low, high = read_image(low_path), read_image(high_path)
        if low.shape != high.shape:
            raise NasflowError(
                f"pair '{self.stems[index]}' differs in size: {low_path} {tuple(low.shape[1:])} "
                f"vs {high_path} {tuple(high.shape[1:])}"
            )
        if self.crop is not None or self.flip:
            low, high = random_crop_flip([low, high], self.crop, self.flip, self._aug_generator(index))
        return low, high, self.stems[index]


def _preview(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


# -- synthetic (embedded default) --------------------------------------------------------------

#: Photos that ship inside the scikit-image wheel (no pooch download needed), as
#: ``name -> skimage.data function``. ``motorcycle`` is the left view of ``stereo_motorcycle``;
#: ``camera`` (the cameraman) and ``coins`` are grey photos, replicated to 3 channels: a neutral
#: scene the network must keep neutral.
BUNDLED_IMAGES: dict[str, str] = {
    "astronaut": "astronaut",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "immunohistochemistry": "immunohistochemistry",
    "motorcycle": "stereo_motorcycle",
    "camera": "camera",
    "coins": "coins",
}

#: Default split by *source image* (no scene appears in two splits). The test photos are three
#: different colour scenes (a white cup on red and brown, a ginger cat, a motorcycle in a
#: workshop), so the evaluation and its contact sheet are not one photo seen eight times.
DEFAULT_SPLIT: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "rocket", "immunohistochemistry", "camera"),
    "val": ("coins",),
    "test": ("coffee", "chelsea", "motorcycle"),
}

_CLEAN_CACHE: dict[str, torch.Tensor] = {}


def load_bundled(name: str) -> torch.Tensor:
    """A bundled scikit-image photo as a float32 ``(3, H, W)`` tensor in ``[0, 1]`` (cached)."""
    if name not in BUNDLED_IMAGES:
        raise NasflowError(f"unknown bundled image '{name}'; choose from {', '.join(BUNDLED_IMAGES)}")
    if name not in _CLEAN_CACHE:
        import skimage.data

        arr = getattr(skimage.data, BUNDLED_IMAGES[name])()
        if isinstance(arr, tuple):
            arr = arr[0]
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        arr = arr[..., :3].astype(np.float32) / 255.0
        _CLEAN_CACHE[name] = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return _CLEAN_CACHE[name]


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1, the sRGB decoding curve)."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB-encoded values (IEC 61966-2-1, the sRGB encoding curve)."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def _log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(np.exp(_uniform(g, float(np.log(lo)), float(np.log(hi)))))


def degrade(
    clean: torch.Tensor,
    g: torch.Generator,
    exposure: tuple[float, float] = (0.02, 0.15),
    photons: tuple[float, float] = (2000.0, 20000.0),
    read_noise: tuple[float, float] = (0.0002, 0.002),
    quantize: bool = True,
) -> torch.Tensor:
    """Low-light version of the sRGB photo ``clean``: a shorter exposure of the same scene.

    The model of a camera (as in the unprocessing pipeline of Brooks et al., CVPR 2019, without
    its colour steps)::

        x   = srgb_to_linear(clean)                       # scene light, linear
        s   = k * x                                       # k: the exposure, same for R, G, B
        raw = Poisson(s * peak) / peak + N(0, sigma^2)    # shot noise + read noise (Foi et al. 2008)
        low = round(255 * linear_to_srgb(clip(raw))) / 255

    ``k`` is drawn log-uniformly from ``exposure`` (0.02-0.15: 2.7 to 5.6 stops under), ``peak``
    (photons at full scale, the sensor's full well) log-uniformly from ``photons``, ``sigma``
    uniformly from ``read_noise`` (linear units), all from ``g``. The darkening is one gain in
    linear light, so up to noise and clipping the colours are those of ``clean`` and one global
    gain in linear light undoes it: no per-channel change the network could not undo. With
    ``quantize`` the result is rounded to 8 bits like a camera file.
    """
    k = _log_uniform(g, *exposure)
    peak = _log_uniform(g, *photons)
    sigma = _uniform(g, *read_noise)
    signal = k * srgb_to_linear(clean)
    noisy = torch.poisson(signal * peak, generator=g) / peak
    noisy = noisy + sigma * torch.randn(signal.shape, generator=g)
    low = linear_to_srgb(noisy.clamp(0.0, 1.0))
    if quantize:
        low = torch.round(low * 255.0) / 255.0
    return low


@DATASETS.register("ruas.synthetic")
class SyntheticLowLight(_Seeded, Dataset):
    """Bundled clean photos turned into ``(low, high, name)`` pairs on the fly (embedded default).

    Item ``i`` is variant ``i % variants`` of image ``images[i // variants]``, named
    ``"<image>_<variant:03d>"``. Its degradation (:func:`degrade`: a shorter exposure in linear
    light, ``exposure``, with Poisson-Gaussian sensor noise) is drawn from ``(seed, name)`` only, so a pair is
    reproducible; crops/flips additionally depend on ``set_epoch``. ``split`` selects
    ``"train"``/``"val"``/``"test"`` (see :data:`DEFAULT_SPLIT`; by source image) or ``None``
    for all images; ``images`` overrides the image list. With ``fresh_each_epoch`` the
    degradation is also redrawn per epoch (more variety for training).
    """

    def __init__(
        self,
        split: str | None = "train",
        variants: int = 8,
        crop: int | Sequence[int] | None = None,
        flip: bool | None = None,
        seed: int = 0,
        images: Iterable[str] | None = None,
        exposure: tuple[float, float] = (0.02, 0.15),
        photons: tuple[float, float] = (2000.0, 20000.0),
        read_noise: tuple[float, float] = (0.0002, 0.002),
        quantize: bool = True,
        fresh_each_epoch: bool = False,
    ) -> None:
        if images is not None:
            self.images = list(images)
        elif split is None:
            self.images = list(BUNDLED_IMAGES)
        elif split in DEFAULT_SPLIT:
            self.images = list(DEFAULT_SPLIT[split])
        else:
            raise NasflowError(f"unknown split '{split}'; choose from {', '.join(DEFAULT_SPLIT)} or None")
        for name in self.images:
            if name not in BUNDLED_IMAGES:
                raise NasflowError(f"unknown bundled image '{name}'; choose from {', '.join(BUNDLED_IMAGES)}")
        if variants < 1:
            raise NasflowError(f"variants must be >= 1, got {variants}")
        for label, (lo, hi) in (("exposure", exposure), ("photons", photons)):  # drawn log-uniformly
            if not (0 < lo <= hi):
                raise NasflowError(f"{label} range must satisfy 0 < lo <= hi, got {(lo, hi)}")
        if not (0 <= read_noise[0] <= read_noise[1]):
            raise NasflowError(f"read_noise range must satisfy 0 <= lo <= hi, got {read_noise}")
        self.split = split
        self.variants = int(variants)
        self.crop = _crop_size(crop)
        self.flip = (split == "train" and self.crop is not None) if flip is None else bool(flip)
        self.seed = int(seed)
        self.epoch = 0
        self.fresh_each_epoch = bool(fresh_each_epoch)
        self.params = dict(exposure=exposure, photons=photons, read_noise=read_noise, quantize=quantize)

    def __len__(self) -> int:
        return len(self.images) * self.variants

    def name(self, index: int) -> str:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return f"{self.images[index // self.variants]}_{index % self.variants:03d}"

    def names(self) -> list[str]:
        return [self.name(i) for i in range(len(self))]

    def split_lists(self) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...], "test": [...]}``: item names of each default split
        at this dataset's ``variants`` (writable as split files)."""
        return {
            split: [f"{img}_{v:03d}" for img in imgs for v in range(self.variants)]
            for split, imgs in DEFAULT_SPLIT.items()
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        if index < 0:
            index += len(self)
        name = self.name(index)
        high = load_bundled(self.images[index // self.variants])
        keys: tuple[object, ...] = ("degrade", self.seed, name)
        if self.fresh_each_epoch:
            keys += (self.epoch,)
        aug = _generator("aug", self.seed, self.epoch, name)
        if self.crop is not None or self.flip:
            # Crop the clean image first (cheaper), then degrade the crop.
            (high,) = random_crop_flip([high], self.crop, self.flip, aug)
        low = degrade(high, _generator(*keys), **self.params)  # type: ignore[arg-type]
        return low, high.clone(), name


__all__ = [
    "BUNDLED_IMAGES",
    "DEFAULT_SPLIT",
    "IMAGE_EXTENSIONS",
    "PairedFolders",
    "SyntheticLowLight",
    "UnpairedFolder",
    "degrade",
    "linear_to_srgb",
    "list_images",
    "load_bundled",
    "pad_to",
    "random_crop_flip",
    "read_image",
    "srgb_to_linear",
]
