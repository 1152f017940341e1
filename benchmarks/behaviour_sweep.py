"""The behaviour promises of the scene-adaptive models, swept over many generated scenes.

    python benchmarks/behaviour_sweep.py                          # ruas-auto and ruas-fast
    python benchmarks/behaviour_sweep.py ruas-auto OLD.pt --out sweep.md

``tests/tasks/ruas/test_behaviour.py`` checks each promise on a handful of scenes; a model can pass
those and still break the promise on a scene nobody wrote down (lamps covering less of the frame, a
darker sky, a photo whose highlights are well below full scale). This sweep varies what the tests
fix, with the tests' own criteria, and prints per model and promise how many cases broke it and the
worst case:

* **night**: a dark sky (mean 0.01-0.09, a gradient, noise 0-0.01) with 1, 4 or 12 lamps (2, 4.5 or
  8 px radius; warm, white, blue or orange) at 120x160 and 300x400: the background (12 px beyond
  the lamps) at most doubles; 3-12 px beyond the lamps the output is no brighter than the input
  times the background's gain on the same rows (2 levels of slack: no glow); the lamps' cores keep
  90 % of their level.
  Every combination, all 864;
* **very dark night**: four 3 px lamps over a sky of 0.003-0.04, as float and as 8-bit input:
  the background at most doubles;
* **normal**: scikit-image's colour and grey photos at 0, +0.5 and +1 EV, and smooth textures of
  mean 0.36-0.6 whose brightest pixel is 0.6-0.9, where the mean is above 0.35: mean within 10 %;
* **monotone**: six photos from -6 to +1 EV in quarter stops: the output mean never falls by more
  than one 8-bit level;
* **grey**: grey cards of 0.005-0.9 with noise 0-0.01, 64x96 and 400x600: channel means within
  2 % of their mean (or one level);
* **bias**: four photos 2-5 stops under: +1 EV brightens by sqrt(2)-2x, -1 EV darkens likewise.

Generated scenes only (no data folder). Timings are not measured here.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

LAMP_COLOURS = ((1.0, 0.92, 0.75), (1.0, 1.0, 1.0), (0.7, 0.8, 1.0), (1.0, 0.5, 0.1))
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "coins", "camera", "moon",
          "page", "text")


def exposed(rgb: np.ndarray, stops: float) -> np.ndarray:
    """The same photo ``stops`` EV brighter or darker: a gain of linear light, re-encoded to sRGB."""
    import torch

    from nasflow.tasks.ruas.exposure import linear_to_srgb, srgb_to_linear

    return linear_to_srgb(srgb_to_linear(torch.from_numpy(rgb)) * 2.0 ** stops).numpy().astype(np.float32)


def photo(name: str) -> np.ndarray:
    import skimage.data

    x = getattr(skimage.data, name)()
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    return (np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x[..., :3]).astype(np.float32)


def soft_texture(mean: float, peak: float, seed: int, size: tuple[int, int] = (200, 300)) -> np.ndarray:
    """A smooth colourful picture of the given mean whose brightest pixel is ``peak``."""
    from skimage.filters import gaussian

    x = gaussian(np.random.default_rng(seed).random((*size, 3)), sigma=8, channel_axis=2)
    x = (x - x.min()) / (x.max() - x.min())
    return np.clip(x / x.mean() * mean, 0, peak).astype(np.float32)


def night(size: tuple[int, int], sky: float, count: int, radius: float, colour: Sequence[float], noise: float,
          seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A sky of mean ``sky`` (brighter towards the ground) with ``count`` lamps at random places."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.repeat((sky * (0.6 + 0.8 * yy / h))[..., None], 3, axis=2) * np.array([0.9, 0.95, 1.1], np.float32)
    img += rng.normal(0, noise, img.shape).astype(np.float32)
    margin = int(radius) + 14
    lamps = [(int(rng.integers(margin, h - margin)), int(rng.integers(margin, w - margin))) for _ in range(count)]
    for cy, cx in lamps:
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        core = np.clip(radius + 0.5 - d, 0, 1)
        falloff = np.exp(-np.maximum(d - radius, 0) ** 2 / (2 * 1.5**2)) * (d > radius)
        img = np.maximum(img, np.maximum(core, 0.8 * falloff)[..., None] * np.asarray(colour, np.float32))
    return np.clip(img, 0, 1).astype(np.float32), lamps


def ring(shape: tuple[int, int], centres: list[tuple[int, int]], inner: float, outer: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d = np.min([np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) for cy, cx in centres], axis=0)
    return (d >= inner) & (d < outer)


@dataclass
class Tally:
    """One promise's cases for one model: how many, which broke it, the worst figure."""

    cases: int = 0
    broken: list[str] = field(default_factory=list)
    worst: float = float("-inf")
    worst_case: str = ""

    def add(self, case: str, ok: bool, figure: float) -> None:
        self.cases += 1
        if not ok:
            self.broken.append(case)
        if figure > self.worst:
            self.worst, self.worst_case = figure, case


Enhance = Callable[..., np.ndarray]


def sweep_night(enhance: Enhance) -> Iterator[tuple[str, bool, float]]:
    sizes, skies, counts, radii, noises = ((120, 160), (300, 400)), (0.01, 0.03, 0.06, 0.09), (1, 4, 12), (2, 4.5, 8), (
        0, 0.004, 0.01)
    for k, (size, sky, count, radius, colour, noise) in enumerate(
            itertools.product(sizes, skies, counts, radii, LAMP_COLOURS, noises)):
        scene, lamps = night(size, sky, count, radius, colour, noise, k)
        out = enhance(scene)
        background = ring(scene.shape[:2], lamps, radius + 12, 1e9)
        gain = float(out[background].mean() / scene[background].mean())
        near = ring(scene.shape[:2], lamps, radius + 3, radius + 12)
        # glow: what the ring gains beyond the background's gain on the same rows (the sky is a gradient, and a
        # darker sky is lifted more: comparing with the whole background's gain would read that as glow)
        row_gain = np.array([out[r][background[r]].mean() / scene[r][background[r]].mean() if background[r].any()
                             else gain for r in range(scene.shape[0])], np.float32)
        glow = float((out[near] - scene[near] * np.broadcast_to(row_gain[:, None, None], scene.shape)[near]).mean())
        cores = ring(scene.shape[:2], lamps, 0, max(radius - 1.5, 1))
        kept = float(out[cores].mean() / scene[cores].mean())
        ok = gain <= 2.0 and glow <= 2 / 255 and kept >= 0.9
        yield (f"{size[1]}x{size[0]} sky {sky} {count} lamp(s) r{radius} {colour} noise {noise}: "
               f"background x{gain:.2f}, glow {255 * glow:+.1f} levels, cores x{kept:.2f}", ok, gain)


def sweep_dark_night(enhance: Enhance) -> Iterator[tuple[str, bool, float]]:
    for sky, quantised, noise in itertools.product((0.003, 0.006, 0.01, 0.02, 0.04), (False, True), (0, 0.004)):
        scene, lamps = night((240, 320), sky, 4, 3, LAMP_COLOURS[0], noise, 3)
        if quantised:
            scene = np.round(scene * 255) / 255
        out = enhance(scene)
        background = ring(scene.shape[:2], lamps, 15, 1e9)
        gain = float(out[background].mean() / scene[background].mean())
        yield f"sky {sky} {'8-bit' if quantised else 'float'} noise {noise}: background x{gain:.3f}", gain <= 2.0, gain


def sweep_normal(enhance: Enhance) -> Iterator[tuple[str, bool, float]]:
    pictures = [(f"{n} {s:+g} EV", exposed(photo(n), s)) for n in PHOTOS for s in (0, 0.5, 1.0)]
    pictures += [(f"texture mean {m} peak {p}", soft_texture(m, p, i))
                 for i, (m, p) in enumerate(itertools.product((0.36, 0.4, 0.45, 0.5, 0.6), (0.6, 0.75, 0.9)))]
    for case, picture in pictures:
        if picture.mean() <= 0.35:  # not normally exposed: the promise does not apply
            continue
        change = float(enhance(picture).mean() / picture.mean() - 1)
        yield f"{case} (mean {picture.mean():.3f}): {100 * change:+.1f} %", abs(change) <= 0.10, abs(change)


def sweep_monotone(enhance: Enhance) -> Iterator[tuple[str, bool, float]]:
    for name in ("astronaut", "coffee", "chelsea", "rocket", "cat", "camera"):
        base = photo(name)[::2, ::2]
        stops = np.arange(-6, 1.01, 0.25)
        means = [float(enhance(exposed(base, s)).mean()) for s in stops]
        worst = max(a - b for a, b in zip(means, means[1:]))
        yield f"{name}: largest fall {255 * worst:+.2f} levels", worst <= 1 / 255, 255 * worst


def sweep_grey(enhance: Enhance) -> Iterator[tuple[str, bool, float]]:
    for level, noise, size in itertools.product((0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9),
                                                (0, 0.003, 0.01), ((64, 96), (400, 600))):
        rng = np.random.default_rng(1)
        card = np.clip(np.full((*size, 3), level, np.float32) + rng.normal(0, noise, (*size, 3)).astype(np.float32),
                       0, 1)
        channels = enhance(card).reshape(-1, 3).mean(axis=0)
        spread = float(channels.max() - channels.min())
        levels = ", ".join(f"{255 * c:.1f}" for c in channels)
        yield (f"grey {level} noise {noise} {size[1]}x{size[0]}: channel means {levels} (8-bit)",
               spread <= max(0.02 * float(channels.mean()), 1 / 255), 255 * spread)


def sweep_bias(enhance: Enhance) -> Iterator[tuple[str, bool, float]]:
    for name, stops in itertools.product(("astronaut", "coffee", "chelsea", "rocket"), (-2, -3, -4, -5)):
        dark = exposed(photo(name)[::2, ::2], stops)
        base = float(enhance(dark).mean())
        up = float(enhance(dark, exposure_bias=1.0).mean()) / base
        down = float(enhance(dark, exposure_bias=-1.0).mean()) / base
        ok = 2**0.5 * 0.95 <= up <= 2.0 * 1.02 and 0.5 / 1.02 <= down <= 2**-0.5 * 1.05
        # the worst figure: how far the nearer bound is crossed (above 1: outside the promise)
        excess = max(up / (2.0 * 1.02), 2**0.5 * 0.95 / up, down / (2**-0.5 * 1.05), 0.5 / 1.02 / down)
        yield f"{name} {stops} EV: +1 EV x{up:.2f}, -1 EV x{down:.2f}", ok, excess


SWEEPS: dict[str, Callable[[Enhance], Iterator[tuple[str, bool, float]]]] = {
    "night": sweep_night, "very dark night": sweep_dark_night, "normal": sweep_normal, "monotone": sweep_monotone,
    "grey": sweep_grey, "bias": sweep_bias,
}


def report(tallies: dict[str, dict[str, Tally]], argv: Sequence[str], shown: int) -> str:
    lines = [f"Command: `{' '.join(['python benchmarks/behaviour_sweep.py', *argv])}`", "",
             "| model | promise | cases | broken | worst case |", "|---|---|---:|---:|---|"]
    for model, by_promise in tallies.items():
        for promise, t in by_promise.items():
            lines.append(f"| {model} | {promise} | {t.cases} | {len(t.broken)} | {t.worst_case} |")
    for model, by_promise in tallies.items():
        for promise, t in by_promise.items():
            if t.broken:
                first = f" (first {shown})" if len(t.broken) > shown else ""
                lines += ["", f"{model}, {promise}: {len(t.broken)} broken{first}", ""]
                lines += [f"- {case}" for case in t.broken[:shown]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=["ruas-auto", "ruas-fast"],
                   help="shipped model names, model files or run folders (default: ruas-auto ruas-fast)")
    p.add_argument("--promise", action="append", choices=sorted(SWEEPS), help="only these promises (repeatable)")
    p.add_argument("--show", type=int, default=10, help="broken cases listed per model and promise (default 10)")
    p.add_argument("--out", type=Path, help="also write the report here (markdown)")
    args = p.parse_args(argv)
    from nasflow.errors import NasflowError
    from nasflow.infer.inference import load_model

    tallies: dict[str, dict[str, Tally]] = {}
    for name in args.models:
        try:
            model = load_model(name, device="cpu")
        except NasflowError as e:
            print(f"behaviour_sweep: {e}", file=sys.stderr)
            return 2
        tallies[name] = {}
        for promise in args.promise or list(SWEEPS):
            tally = tallies[name][promise] = Tally()
            for case, ok, figure in SWEEPS[promise](model.enhance_rgb):
                tally.add(case, ok, figure)
            print(f"{name}: {promise}: {len(tally.broken)} of {tally.cases} broken", file=sys.stderr)
    text = report(tallies, argv, args.show)
    print(text, end="")
    if args.out:
        from nasflow.atomic import write_atomic

        write_atomic(args.out, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
