"""Tables, CSV and picture of ``benchmarks/pareto.py``: dev quality against fast-path time.

The front is taken over the arms' means (over seeds): an arm is on it when no other arm is at
least as fast with a higher dev GT-mean PSNR (ties in time: the better one). Differences read
with :data:`ablation_report.RULE` (mean +- std intervals over seeds that do not overlap).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ablation_report import RULE, _pm, _stats, rows_by_arm, verdict

SETS = ("lol", "mit", "fivek_normal")
SEARCH = "search-w"


def dev(r: dict[str, Any], metric: str) -> float:
    """The mean of a run's ``metric`` over the dev sets."""
    return float(np.mean([r[f"{s}/{metric}"] for s in SETS]))


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names of ``{name: (ms, quality)}`` on the front (faster first): no other point is at least as
    fast and better."""
    front, best = [], -np.inf
    for name, (_, q) in sorted(points.items(), key=lambda kv: (kv[1][0], -kv[1][1])):
        if q > best:
            front.append(name)
            best = q
    return front


def _ops(r: dict[str, Any]) -> str:
    return ", ".join(e[0] if isinstance(e, list) else e["op"] for e in r["genotype"]["cells"]["iem"])


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _head(cells: Sequence[str]) -> list[str]:
    return [_line(cells), "|" + "|".join("---" for _ in cells) + "|"]


def arm_table(groups: dict[str, list[dict[str, Any]]], front: list[str]) -> str:
    lines = _head(["arm", "runs", "dev PSNR", "dev SSIM", "dev GT-mean PSNR", "ms (measured)", "ms (predicted)",
                   "params", "GFLOPs", "on the front"])
    for name, rows in groups.items():
        params = sorted({r["params"] for r in rows})
        lines.append(_line([name, str(len(rows)), _pm([dev(r, "psnr") for r in rows]),
                            _pm([dev(r, "ssim") for r in rows], 3), _pm([dev(r, "gt_mean_psnr") for r in rows]),
                            _pm([r["ms"] for r in rows]), _pm([r["predicted_ms"] for r in rows]),
                            "-".join(str(p) for p in dict.fromkeys([params[0], params[-1]])),
                            _pm([r["gflops"] for r in rows], 4), "yes" if name in front else ""]))
    return "\n".join(lines)


def matched_rows(plan: dict[str, dict[str, Any]], results: list[dict[str, Any]], arm: str) -> list[dict[str, Any]]:
    """The random runs drawn at the predicted ms of ``arm``'s runs (every seed pooled)."""
    wanted = {(f"random-{k}", m["seed"]) for run, m in plan.items() if run.split("/")[0] == arm for k in m["randoms"]}
    return [r for r in results if (r["arm"], r["seed"]) in wanted]


def reading_table(groups: dict[str, list[dict[str, Any]]], plan: dict[str, dict[str, Any]],
                  results: list[dict[str, Any]]) -> str:
    lines = _head(["searched arm", "dev GT-mean PSNR", "ms", "ms / paper's", "Δ GT-mean vs paper",
                   "matched random runs", "their GT-mean PSNR", "Δ GT-mean vs matched random"])
    paper = [dev(r, "gt_mean_psnr") for r in groups.get("paper", [])]
    paper_ms = _stats([r["ms"] for r in groups.get("paper", [])])[0] if paper else float("nan")
    for name, rows in groups.items():
        if not name.startswith(SEARCH):
            continue
        gt = [dev(r, "gt_mean_psnr") for r in rows]
        ms = _stats([r["ms"] for r in rows])[0]
        cells = [name, _pm(gt), f"{ms:.2f}", f"{ms / paper_ms:.2f}" if paper else "-"]
        diff, word = verdict(gt, paper) if paper else (float("nan"), "no paper runs")
        cells.append(f"{diff:+.2f} ({word})")
        rand = [dev(r, "gt_mean_psnr") for r in matched_rows(plan, results, name)]
        if rand:
            diff, word = verdict(gt, rand)
            cells += [str(len(rand)), _pm(rand), f"{diff:+.2f} ({word})"]
        else:
            cells += ["0", "-", "none drawn within the tolerance"]
        lines.append(_line(cells))
    return "\n".join(lines)


def genotype_table(results: list[dict[str, Any]], plan: dict[str, dict[str, Any]]) -> str:
    by_run = {f"{r['arm']}/seed{r['seed']}": r for r in results}
    lines = _head(["searched run", "IEM edges (c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4)", "predicted ms",
                   "matched random genotypes (predicted ms)"])
    for run, m in plan.items():
        r = by_run[run]
        keys = [f"random-{k}/seed{m['seed']}" for k in m["randoms"]]
        drawn = ", ".join(f"{key.split('/')[0]} ({by_run[key]['predicted_ms']:.2f})" for key in keys if key in by_run)
        lines.append(_line([run, _ops(r), f"{r['predicted_ms']:.2f}", drawn or "none within the tolerance"]))
    return "\n".join(lines)


# -- picture --------------------------------------------------------------------------------------
def svg_front(groups: dict[str, list[dict[str, Any]]], front: list[str]) -> str:
    """Dev GT-mean PSNR against measured ms: each run a dot, each arm's mean a larger dot with its
    +- std bar over seeds (random genotypes grey), the front a dashed line through its arms."""
    w, h, pad = 560, 360, 52
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#ff7f0e"]
    named = [n for n in groups if not n.startswith("random-")]
    fixed = {"paper": "#d62728", "conv3x3": "#000000"}
    color = {n: fixed.get(n, palette[i % len(palette)]) for i, n in enumerate(named)}
    runs = [r for rows in groups.values() for r in rows]
    xs, ys = [r["ms"] for r in runs], [dev(r, "gt_mean_psnr") for r in runs]
    x0, x1 = 0.0, max(xs) * 1.1 or 1.0
    y0, y1 = float(np.floor(min(ys) - 0.5)), float(np.ceil(max(ys) + 0.5))

    def px(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (w - pad - 10)

    def py(y: float) -> float:
        return 10 + (y1 - y) / (y1 - y0) * (h - pad - 10)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 190}" height="{h}" font-family="sans-serif" '
           'font-size="11">', '<rect width="100%" height="100%" fill="white"/>',
           f'<rect x="{pad}" y="10" width="{w - pad - 10}" height="{h - pad - 10}" fill="none" stroke="#999"/>']
    for t in np.linspace(y0, y1, 5):
        out.append(f'<text x="{pad - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>')
    for t in np.linspace(x0, x1, 5):
        out.append(f'<text x="{px(t):.1f}" y="{h - pad + 14}" text-anchor="middle">{t:.1f}</text>')
    out.append(f'<text x="{(w + pad) / 2:.0f}" y="{h - pad + 32}" text-anchor="middle">fast-path ms per image</text>')
    out.append(f'<text x="14" y="{(h - pad) / 2:.0f}" transform="rotate(-90 14 {(h - pad) / 2:.0f})" '
               'text-anchor="middle">dev GT-mean PSNR (dB)</text>')
    means = {n: (_stats([r["ms"] for r in rows])[0], _stats([dev(r, "gt_mean_psnr") for r in rows]))
             for n, rows in groups.items()}
    corners = [(px(means[n][0]), py(means[n][1][0])) for n in front]  # a staircase: right, then up
    steps = corners[:1] + [p for (_, ya), (xb, yb) in zip(corners, corners[1:]) for p in ((xb, ya), (xb, yb))]
    out.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in steps)}" fill="none" '
               'stroke="#ff7f0e" stroke-width="2" '
               'stroke-dasharray="6 3"/>')
    for n, rows in groups.items():
        c = color.get(n, "#999")
        for r in rows:
            out.append(f'<circle cx="{px(r["ms"]):.1f}" cy="{py(dev(r, "gt_mean_psnr")):.1f}" r="2.2" fill="{c}" '
                       'fill-opacity="0.5"/>')
        ms, (mean, std) = means[n]
        out.append(f'<line x1="{px(ms):.1f}" x2="{px(ms):.1f}" y1="{py(mean - std):.1f}" y2="{py(mean + std):.1f}" '
                   f'stroke="{c}" stroke-width="1.5"/>')
        out.append(f'<circle cx="{px(ms):.1f}" cy="{py(mean):.1f}" r="4.5" fill="{c}"/>')
    ly = 20
    for n in named + ["random genotypes at matched ms", "Pareto front (arm means)"]:
        mark = (f'<line x1="{w + 4}" x2="{w + 20}" y1="{ly - 4}" y2="{ly - 4}" stroke="#ff7f0e" stroke-width="2" '
                'stroke-dasharray="6 3"/>') if n.startswith("Pareto") else \
            f'<circle cx="{w + 12}" cy="{ly - 4}" r="4.5" fill="{color.get(n, "#999")}"/>'
        out.append(f'{mark}<text x="{w + 24}" y="{ly}">{n}</text>')
        ly += 16
    out.append(f'<text x="{w + 4}" y="{h - pad}" fill="#555">bars: mean ± std over seeds</text>')
    return "\n".join(out + ["</svg>"]) + "\n"


# -- everything -----------------------------------------------------------------------------------
CSV_KEYS = ("arm", "seed", "family", "dev_psnr", "dev_ssim", "dev_gt_mean_psnr", "ms", "predicted_ms", "params",
            "gflops", *(f"{s}/{m}" for s in SETS for m in ("psnr", "ssim", "gt_mean_psnr")), "search_seconds",
            "train_seconds", "iem_ops")


def write_report(results: list[dict[str, Any]], plan: dict[str, dict[str, Any]], budget: Any, budget_name: str,
                 timing: dict[str, Any], work: Path, command: str) -> str:
    order = sorted({r["arm"] for r in results}, key=lambda n: (
        (0, float(n[len(SEARCH):])) if n.startswith(SEARCH) else (1, 0.0) if n == "paper" else (2, 0.0)
        if n == "conv3x3" else (3, float(n.split("-")[1]))))
    groups = rows_by_arm(results, order)
    means = {n: (_stats([r["ms"] for r in rows])[0], _stats([dev(r, "gt_mean_psnr") for r in rows])[0])
             for n, rows in groups.items()}
    front = pareto_front(means)
    h, w = timing["size"]
    text = "\n\n".join([
        f"## Quality against fast-path time, budget `{budget_name}`\n\nCommand: `{command}`; budget: "
        f"{json.dumps(asdict(budget))}. Timing: {json.dumps(timing)} (the RUAS fast path, one piece, at {w}x{h}; "
        "every run timed in one sitting, interleaved; median of the rounds' medians). Mean ± std over seeds; "
        "dev = mean over lol, mit, fivek_normal of PSNR (dB, rounded 8-bit RGB), SSIM (scikit-image) and GT-mean "
        "PSNR (output scaled to the ground truth's mean). Predicted ms: the cost table's base + sum over edges.",
        "### Arms\n\n" + arm_table(groups, front),
        f"### Searched arms against the controls ({RULE})\n\n" + reading_table(groups, plan, results),
        "### Genotypes searched and the random genotypes drawn at their predicted ms\n\n"
        + genotype_table(results, plan),
    ]) + "\n"
    (work / "table.md").write_text(text, encoding="utf-8")
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    with open(work / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_KEYS, extrasaction="ignore")
        writer.writeheader()
        for r in sorted(results, key=lambda r: (order.index(r["arm"]), r["seed"])):
            writer.writerow({**r, "dev_psnr": dev(r, "psnr"), "dev_ssim": dev(r, "ssim"),
                             "dev_gt_mean_psnr": dev(r, "gt_mean_psnr"), "iem_ops": _ops(r)})
    (work / "pareto.svg").write_text(svg_front(groups, front), encoding="utf-8")
    return text
