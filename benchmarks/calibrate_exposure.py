"""Calibrate the dark-photo models' metering and key to FiveK expert C on the fivek_normal pairs.

    python benchmarks/calibrate_exposure.py --out benchmarks/results/exposure-calibration.md

The rule (fixed before it was run; ``nasflow.tasks.ruas.calibration``): every fivek_normal input
(a normally exposed camera rendering) is darkened by 1, 2, 3 and 4 stops in linear light; the
dark-photo models' tone pipeline without the network (global exposure, then the IEM's target lift)
runs on each; per case the key that meets expert C's mean is found; a metering's key is the median
over cases; the metering with the smaller leave-one-photo-out brightness error wins. Then the
exposure's shoulder: with that metering, the knee (or none: a clip per channel) with the highest
leave-one-photo-out PSNR against the expert's pictures, each knee at its own median key. ``ruas-mit``
and ``ruas-lol`` are scored on ``lol`` and ``mit``, never on these pairs, so the key is not chosen
on what their cards report. Skips cleanly (exit 0, one line) without the data folder.

    python benchmarks/calibrate_exposure.py --check-model ruas-mit --check-model ruas-lol

adds the premise check, run once the models are trained: each named model, whole (exposure, network,
filter), on the same cases, against the pipeline without the network at that model's metering, key and
lift. The rule assumes the two agree (the network is trained towards the pipeline's target).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from nasflow.infer.inference import Enhancer
    from nasflow.tasks.ruas.calibration import Case, MeteringFit, ToneLift

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def read_calibration_pairs(folder: Path):  # noqa: ANN201
    import torch

    from nasflow.infer.imageio import IMAGE_SUFFIXES, read_image

    pairs = []
    for low in sorted(p for p in (folder / "low").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        high = next(p for p in (folder / "high").glob(low.stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES)

        def tensor(path: Path) -> torch.Tensor:
            return torch.from_numpy(read_image(path).rgb.copy()).permute(2, 0, 1).unsqueeze(0).float()

        pairs.append((low.stem, tensor(low), tensor(high)))
    return pairs


def report(chosen, fits, cases, folder: Path, argv: Sequence[str]) -> str:  # noqa: ANN001
    lines = [
        "# Exposure calibration of the dark-photo models (ruas-mit, ruas-lol)",
        "",
        f"Command: `{' '.join(['python benchmarks/calibrate_exposure.py', *argv])}`",
        "",
        f"Data: {len({c.photo for c in cases})} pairs of `{folder.name}` (FiveK camera renderings -> expert C), "
        f"each darkened by {', '.join(f'{d:g}' for d in sorted({c.stops for c in cases}))} stops: {len(cases)} cases. "
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        "Rule (fixed before it was run, `tasks/ruas/calibration.py`): the tone pipeline without the network "
        "(global exposure with no highlight limit, then `u = y' / t*` with the IEM's exposure target: level 0.25, "
        "power 0.5, sigma 6, at most one stop); per case the key whose output mean meets the expert's; a metering's "
        "key is the median over cases; the metering with the smaller leave-one-photo-out mean absolute brightness "
        "error (8-bit) is chosen.",
        "",
        "The leave-one-photo-out PSNR against the expert's picture (the same pipeline, each photo's cases at the "
        "median key of the other photos') is a check added after the dev figures of the models calibrated here "
        "were seen; it is not the rule.",
        "",
        "| metering | key (median over cases) | key range over cases | LOO mean abs brightness err | LOO signed err "
        "| LOO PSNR (check) |",
        "|---|---|---|---|---|---|",
    ]
    for f in fits:
        mark = " (chosen)" if f is chosen else ""
        lines.append(f"| {f.metering}{mark} | {f.key:.4f} | {min(f.case_keys):.4f} - {max(f.case_keys):.4f} | "
                     f"{f.loo_abs_error:.1f} | {f.loo_signed_error:+.1f} | {f.loo_psnr:.2f} dB |")
    lines += ["", "Per case (key that meets the expert's mean):", "",
              "| photo | stops darker | expert mean (8-bit) | " + " | ".join(f"{f.metering} key" for f in fits) + " |",
              "|---|---|---|" + "---|" * len(fits)]
    for i, c in enumerate(cases):
        lines.append(f"| {c.photo} | {c.stops:g} | {255 * c.expert_mean:.1f} | "
                     + " | ".join(f"{f.case_keys[i]:.4f}" for f in fits) + " |")
    return "\n".join(lines) + "\n"


def shoulder_section(chosen: MeteringFit, fits: Sequence[MeteringFit]) -> str:
    """Step 5 of the rule: every knee with its key, brightness errors and PSNR, the chosen one marked."""
    lines = [
        "## The shoulder (step 5)",
        "",
        f"Rule (fixed before it was run, `tasks/ruas/calibration.py`, step 5): with the chosen metering "
        f"({chosen.metering}), each knee of the exposure's shoulder, and no shoulder (each channel clipped at full "
        "scale), gets its key by the median rule above; the knee with the highest leave-one-photo-out PSNR against "
        "the expert's pictures is chosen.",
        "",
        "| knee | key (median over cases) | LOO mean abs brightness err | LOO signed err | LOO PSNR |",
        "|---|---|---|---|---|",
    ]
    for f in fits:
        knee = "none (clip)" if f.shoulder is None else f"{f.shoulder:g}"
        mark = " (chosen)" if f is chosen else ""
        lines.append(f"| {knee}{mark} | {f.key:.4f} | {f.loo_abs_error:.1f} | {f.loo_signed_error:+.1f} | "
                     f"{f.loo_psnr:.2f} dB |")
    return "\n".join(lines) + "\n"


def lift_of(options: dict) -> ToneLift:
    """The IEM exposure target's constants a model was trained with (its task options)."""
    from nasflow.tasks.ruas.calibration import ToneLift

    names = {"level": "exposure_level", "power": "exposure_power", "sigma": "exposure_sigma",
             "max_lift_ev": "exposure_max_lift_ev", "luminance": "exposure_luminance"}
    return ToneLift(**{field: options[key] for field, key in names.items() if key in options})


def load_models(names: Sequence[str]) -> list[Enhancer]:
    """The models to check, loaded before the calibration runs: a wrong name, or a model without the
    global exposure step the calibration is for, fails at once, in one line."""
    from nasflow.errors import ConfigError
    from nasflow.infer.inference import load_model

    try:
        enhancers = [load_model(name, device="cpu") for name in names]
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    for name, enhancer in zip(names, enhancers):
        if not float(dict(enhancer.loaded.config.task_options).get("exposure_key", 0.0)):
            raise SystemExit(f"error: model {name} has no global exposure step (exposure_key 0): nothing to check")
    return enhancers


def premise_rows(names: Sequence[str], enhancers: Sequence[Enhancer], cases: Sequence[Case]) -> list[str]:
    """One table row per model: its key, its signed error whole, the pipeline's at its key, the gap."""
    from nasflow.tasks.ruas.calibration import pipeline, signed_error

    rows = []
    for name, enhancer in zip(names, enhancers):
        options = dict(enhancer.loaded.config.task_options)
        metering, key = options.get("exposure_metering", "mean"), float(options["exposure_key"])
        whole = signed_error(cases, enhancer.enhance_tensor)
        knee = options.get("exposure_shoulder")
        alone = signed_error(cases, pipeline(metering, key, lift_of(options), knee))
        exposure = f"{metering}, {key:g}" + ("" if knee is None else f", knee {knee:g}")
        rows.append(f"| {name} | {exposure} | {whole:+.2f} | {alone:+.2f} | {whole - alone:+.2f} |")
    return rows


def premise_section(rows: Sequence[str]) -> str:
    return "\n".join([
        "## Premise check: the trained network follows the pipeline",
        "",
        "Each model whole (global exposure, network, noise filter) on the same cases, against the pipeline "
        "without the network at the model's own metering, key, shoulder and lift. Signed brightness error: output mean "
        "minus the expert's, 8-bit levels, mean over cases (in-sample, not leave-one-out).",
        "",
        "| model | metering, key (, knee) | model's error | pipeline's error | model minus pipeline |",
        "|---|---|---|---|---|",
        *rows,
    ]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the data folder (default ../shared/data)")
    parser.add_argument("--set", default="fivek_normal", help="the calibration pairs' folder in --data")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    parser.add_argument("--check-model", action="append", default=[], metavar="NAME",
                        help="a trained model (shipped name or model file) to check the premise on: its brightness "
                             "error whole against the pipeline's at its key (repeatable)")
    args = parser.parse_args(argv)
    folder = args.data / args.set
    if not (folder / "low").is_dir():
        print(f"skipped: no calibration pairs at {folder}")
        return 0
    from nasflow.tasks.ruas.calibration import calibrate, calibrate_shoulder, cases_from_pairs

    checked = load_models(args.check_model)
    cases = cases_from_pairs(read_calibration_pairs(folder))
    chosen, fits = calibrate(cases)
    text = report(chosen, fits, cases, folder, argv)
    text += "\n" + shoulder_section(*calibrate_shoulder(cases, chosen.metering))
    if args.check_model:
        text += "\n" + premise_section(premise_rows(args.check_model, checked, cases))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
