"""Tables, the reading and the picture of ``benchmarks/ablation.py`` from its per-run results.

A difference between two arms "exceeds the seed spread" when the means differ by more than the
sum of their standard deviations over seeds (their mean +- std intervals do not overlap); anything
less is reported as covered by the spread. The rule is stated in every table it decides, and it is
applied to the dev mean PSNR and to the dev mean GT-mean PSNR alike.

Beside the seed spread, each dev figure carries a 95% percentile bootstrap interval over images
(:func:`bootstrap_sets`): how much the figure depends on which images happen to be in the dev sets.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

PAIRED = ("lol", "mit", "fivek_normal")
REAL = ("LIME", "MEF")
RULE = "a difference exceeds the seed spread when |mean difference| > std(arm) + std(reference)"
METRICS = (("psnr", "PSNR"), ("gt_mean_psnr", "GT-mean PSNR"))  # the dev figures with intervals over images
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
RESAMPLING = (f"95% percentile bootstrap interval over images in brackets: each image's value is its mean over "
              f"the row's runs (seeds), images are resampled with replacement within each set ({RESAMPLES:,} "
              f"resamples, seed {BOOTSTRAP_SEED}); the dev mean's interval resamples every set's images at once "
              "and averages the three set means")


def _dev(r: dict[str, Any], metric: str = "psnr") -> float:
    return float(np.mean([r[f"{s}/{metric}"] for s in PAIRED]))


def bootstrap_sets(sets: Sequence[Sequence[float]], resamples: int = RESAMPLES, level: float = 0.95,
                   seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13) of the mean over ``sets`` of each
    set's mean over its images: every resample draws each set's images with replacement, as many as the
    set holds (a stratified bootstrap, so each set keeps its weight). One set: the plain percentile
    bootstrap of its mean, as ``nasflow.tasks.ruas.metrics.bootstrap_interval``."""
    values = [np.asarray(v, dtype=np.float64) for v in sets]
    if not values or any(v.ndim != 1 or v.size == 0 or not np.isfinite(v).all() for v in values):
        raise ValueError("bootstrap_sets needs one or more non-empty sequences of finite numbers")
    rng = np.random.default_rng(seed)
    means = np.zeros(resamples)
    for v in values:
        means += v[rng.integers(0, v.size, (resamples, v.size))].mean(axis=1)
    low, high = np.quantile(means / len(values), [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def per_image(rows: Sequence[dict[str, Any]], s: str, metric: str) -> np.ndarray | None:
    """Each image of set ``s``: its ``metric`` averaged over ``rows`` (the seeds); None when a run kept no
    per-image figures (results from before they were recorded)."""
    if any(f"{s}/{metric}_per_image" not in r for r in rows):
        return None
    names = rows[0][f"{s}/images"]
    if any(r[f"{s}/images"] != names for r in rows):
        raise ValueError(f"the runs of one row scored different images of {s}")
    return np.mean([r[f"{s}/{metric}_per_image"] for r in rows], axis=0)


def _with_interval(values: Sequence[float], images: Sequence[np.ndarray | None]) -> str:
    """``mean ± std [low, high]``: the seed spread, then the bootstrap interval over images."""
    if any(v is None for v in images):
        return _pm(values) + " [-]"
    low, high = bootstrap_sets(images)  # type: ignore[arg-type]
    return f"{_pm(values)} [{low:.2f}, {high:.2f}]"


def _stats(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _pm(values: Sequence[float], digits: int = 2) -> str:
    mean, std = _stats(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def rows_by_arm(results: list[dict[str, Any]], arm_names: list[str]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {name: [] for name in arm_names}
    for r in results:
        if r["arm"] in grouped:
            grouped[r["arm"]].append(r)
    for rows in grouped.values():
        rows.sort(key=lambda r: r["seed"])
    return {k: v for k, v in grouped.items() if v}


def with_family_rows(grouped: dict[str, list[dict[str, Any]]], families: dict[str, str]) -> dict[str, list[dict]]:
    """Adds one row per family (``random (all)``): every run of its members, pooled."""
    out = dict(grouped)
    for family in sorted(set(families.values()) - {""}):
        members = [r for name, rows in grouped.items() if families.get(name) == family for r in rows]
        if members:
            out[f"{family} (all)"] = members
    return out


def quality_table(groups: dict[str, list[dict[str, Any]]]) -> str:
    """PSNR and GT-mean PSNR per dev set and their dev mean: mean ± std over seeds [interval over images]."""
    head = (["arm", "runs"] + [f"{s} {label}" for s in PAIRED for _, label in METRICS]
            + [f"dev mean {label}" for _, label in METRICS] + ["best / worst seed (dev PSNR)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, rows in groups.items():
        cells = [name, str(len(rows))]
        images = {(s, m): per_image(rows, s, m) for s in PAIRED for m, _ in METRICS}
        for s in PAIRED:
            cells += [_with_interval([r[f"{s}/{m}"] for r in rows], [images[s, m]]) for m, _ in METRICS]
        cells += [_with_interval([_dev(r, m) for r in rows], [images[s, m] for s in PAIRED]) for m, _ in METRICS]
        devs = [_dev(r) for r in rows]
        best, worst = int(np.argmax(devs)), int(np.argmin(devs))

        def tag(i: int) -> str:
            who = f"{rows[i]['arm']}, " if "(all)" in name else ""
            return f"{devs[i]:.2f} ({who}seed {rows[i]['seed']})"

        cells.append(f"{tag(best)} / {tag(worst)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ssim_table(groups: dict[str, list[dict[str, Any]]]) -> str:
    head = ["arm"] + [f"{s} SSIM" for s in PAIRED] + ["dev mean SSIM"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, rows in groups.items():
        cells = [name] + [_pm([r[f"{s}/ssim"] for r in rows], 3) for s in PAIRED] + [
            _pm([_dev(r, "ssim") for r in rows], 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(groups: dict[str, list[dict[str, Any]]]) -> str:
    head = ["arm", "params", "GFLOPs 600x400", "ms/image 600x400 (fast path)", "search s", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, rows in groups.items():
        params = sorted({r["params"] for r in rows})
        p = str(params[0]) if len(params) == 1 else f"{params[0]}-{params[-1]}"
        cells = [name, p, _pm([r["gflops_600x400"] for r in rows], 3), _pm([r["ms_600x400"] for r in rows], 1),
                 _pm([r["search_seconds"] for r in rows], 0), _pm([r["train_seconds"] for r in rows], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def real_table(groups: dict[str, list[dict[str, Any]]]) -> str:
    metrics = (("brightness", 3), ("entropy", 2), ("loe", 0), ("noise", 2))
    head = ["arm"] + [f"{s} {m}" for s in REAL for m, _ in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    first = next(iter(groups.values()))[0]
    lines.append("| input (unchanged) | " + " | ".join(
        ("-" if m != "noise" else f"{first[f'{s}/input_noise']:.2f}") for s in REAL for m, _ in metrics) + " |")
    for name, rows in groups.items():
        cells = [name] + [_pm([r[f"{s}/{m}"] for r in rows], d) for s in REAL for m, d in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(a: Sequence[float], b: Sequence[float]) -> tuple[float, str]:
    (ma, sa), (mb, sb) = _stats(a), _stats(b)
    diff = ma - mb
    if len(a) < 2 or len(b) < 2:
        return diff, "too few seeds to tell"
    if abs(diff) <= sa + sb:
        return diff, "within the spread"
    return diff, "better, beyond the spread" if diff > 0 else "worse, beyond the spread"


def reading_table(groups: dict[str, list[dict[str, Any]]], reference: str) -> str:
    if reference not in groups:
        return f"(no '{reference}' rows to compare with)"
    ref = groups[reference]
    head = ["arm", *[f"Δ {s} PSNR / GT-mean" for s in PAIRED]]
    head += [cell for _, label in METRICS for cell in (f"Δ dev mean {label}", f"reading (dev mean {label})")]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, rows in groups.items():
        if name == reference:
            continue
        cells = [name]
        for s in PAIRED:
            diffs = [verdict([r[f"{s}/{m}"] for r in rows], [r[f"{s}/{m}"] for r in ref])[0] for m, _ in METRICS]
            cells.append(" / ".join(f"{d:+.2f}" for d in diffs))
        for m, _ in METRICS:
            diff, word = verdict([_dev(r, m) for r in rows], [_dev(r, m) for r in ref])
            cells += [f"{diff:+.2f}", word]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def genotype_table(groups: dict[str, list[dict[str, Any]]], searched: set[str]) -> str:
    lines = ["| arm | seed | IEM edges (c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4) | NRM edges |", "|---|---|---|---|"]
    for name, rows in groups.items():
        if name not in searched:
            continue
        for r in rows:
            cells = r["genotype"]["cells"]
            ops = {label: ", ".join(e[0] if isinstance(e, list) else e["op"] for e in edges)
                   for label, edges in cells.items()}
            lines.append(f"| {name} | {r['seed']} | {ops.get('iem', '-')} | {ops.get('nrm', '-')} |")
    return "\n".join(lines)


# -- picture --------------------------------------------------------------------------------------
def svg_scatter(groups: dict[str, list[dict[str, Any]]], families: dict[str, str]) -> str:
    """PSNR against parameters, one panel per dev set: each run a small dot in its arm's colour,
    each arm's mean +- std a bar (nudged sideways so arms of one size stay apart), the random
    genotypes' runs a grey cloud."""
    w, h, pad = 300, 260, 48
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    named = [n for n in groups if not families.get(n) and "(all)" not in n]
    color = {n: palette[i % len(palette)] for i, n in enumerate(named)}
    runs = [r for rows in groups.values() for r in rows]
    xs = [r["params"] for r in runs]
    x0, x1 = min(xs) * 0.9, max(xs) * 1.05
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{3 * w + 230}" height="{h + 30}" '
             f'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>']
    for k, s in enumerate(PAIRED):
        ys = [r[f"{s}/psnr"] for r in runs]
        y0, y1 = math.floor(min(ys) - 0.5), math.ceil(max(ys) + 0.5)
        ox = k * w

        def px(x: float) -> float:
            return ox + pad + (x - x0) / (x1 - x0) * (w - pad - 10)

        def py(y: float) -> float:
            return 10 + (y1 - y) / (y1 - y0) * (h - pad - 10)

        parts.append(f'<rect x="{ox + pad}" y="10" width="{w - pad - 10}" height="{h - pad - 10}" fill="none" '
                     f'stroke="#999"/>')
        parts.append(f'<text x="{ox + pad + 4}" y="24" font-weight="bold">{s}</text>')
        for t in np.linspace(y0, y1, 5):
            parts.append(f'<text x="{ox + pad - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>')
        for t in np.linspace(x0, x1, 4):
            parts.append(f'<text x="{px(t):.1f}" y="{h - pad + 14}" text-anchor="middle">{t:.0f}</text>')
        parts.append(f'<text x="{ox + pad + (w - pad) / 2:.0f}" y="{h - pad + 30}" text-anchor="middle">'
                     'parameters</text>')
        parts.append(f'<text x="{ox + 12}" y="{10 + (h - pad) / 2:.0f}" transform="rotate(-90 {ox + 12} '
                     f'{10 + (h - pad) / 2:.0f})" text-anchor="middle">PSNR (dB)</text>')
        for name, rows in groups.items():
            if "(all)" in name:
                continue
            if families.get(name):
                for r in rows:
                    parts.append(f'<circle cx="{px(r["params"]):.1f}" cy="{py(r[f"{s}/psnr"]):.1f}" r="3" '
                                 'fill="#aaa" fill-opacity="0.7"/>')
                continue
            mean, std = _stats([r[f"{s}/psnr"] for r in rows])
            c = color[name]
            for r in rows:
                parts.append(f'<circle cx="{px(r["params"]):.1f}" cy="{py(r[f"{s}/psnr"]):.1f}" r="2.2" '
                             f'fill="{c}" fill-opacity="0.6"/>')
            x = px(float(np.mean([r["params"] for r in rows]))) + 5 * (named.index(name) % 3 - 1)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(mean - std):.1f}" y2="{py(mean + std):.1f}" '
                         f'stroke="{c}" stroke-width="2"/>')
            parts.append(f'<circle cx="{x:.1f}" cy="{py(mean):.1f}" r="4.5" fill="{c}"/>')
    ly = 20
    for name in named:
        parts.append(f'<circle cx="{3 * w + 12}" cy="{ly - 4}" r="4.5" fill="{color[name]}"/>'
                     f'<text x="{3 * w + 22}" y="{ly}">{name}</text>')
        ly += 16
    if any(families.values()):
        parts.append(f'<circle cx="{3 * w + 12}" cy="{ly - 4}" r="3" fill="#aaa"/>'
                     f'<text x="{3 * w + 22}" y="{ly}">random genotypes (each run)</text>')
    parts.append(f'<text x="{3 * w + 4}" y="{h}" fill="#555">bars: mean ± std over seeds</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_report(results: list[dict[str, Any]], arms: list[Any], budget: Any, budget_name: str, work: Path,
                 command: str) -> str:
    names = [a.name for a in arms]
    families = {a.name: a.family for a in arms}
    grouped = rows_by_arm(results, names)
    groups = with_family_rows(grouped, families)
    searched = {a.name for a in arms if a.searches}
    threads = sorted({r.get("threads") for r in results})
    text = "\n\n".join([
        f"## Ablation, budget `{budget_name}`\n\nCommand: `{command}`; budget: "
        f"{json.dumps(asdict(budget))}; torch threads {threads}. Mean ± std over seeds; PSNR in dB on rounded "
        "8-bit RGB, scikit-image SSIM; GT-mean PSNR: the output scaled by mean(GT) / mean(output), clipped, "
        "rounded, scored (exposure taken out); dev sets of ../shared/data (benchmarks/quality.py's scoring).",
        "### Dev pairs: PSNR and GT-mean PSNR (dB)\n\nEach cell: mean ± std over seeds, then the "
        f"{RESAMPLING}.\n\n" + quality_table(groups),
        "### Dev SSIM (mean ± std over seeds)\n\n" + ssim_table(groups),
        f"### Against the paper's genotype ({RULE})\n\n" + reading_table(groups, "paper"),
        f"### Against random genotypes ({RULE})\n\n" + reading_table(groups, "random (all)"),
        "### Size and time\n\n" + cost_table(groups),
        "### Real photos, no reference (mean over images; noise: Immerkaer sigma estimate in 8-bit levels)\n\n"
        + real_table(groups),
        "### Genotypes found\n\n" + genotype_table(grouped, searched),
    ]) + "\n"
    (work / "table.md").write_text(text, encoding="utf-8")
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    # the CSV holds one number per column: the genotype and the per-image lists stay in results.json
    keys = list(dict.fromkeys(k for r in results for k, v in r.items() if not isinstance(v, (list, dict))))
    with open(work / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    (work / "psnr_vs_params.svg").write_text(svg_scatter(grouped, families), encoding="utf-8")
    return text
