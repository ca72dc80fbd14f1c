"""``clustvit bench plot``: the figures of docs/BENCHMARKS.md, from what the measuring commands wrote.

``--suite``: a ``tools/run_benchmarks.sh`` output folder; its ``seg_k3ip3_shape*`` rows give
``resolution.png`` (GFLOPs and milliseconds per image of both models against the input size).
``--gflops``: ``clustvit bench flops`` JSON files of models run on the same images; they give
``gflops_per_image.png`` (one bar per model and image).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from clustvit.bench.common import save_figure_atomic  # noqa: E402

SHAPE_ROW = re.compile(r"seg_k3ip3_shape(\d+)$")


def resolution_rows(suite: Path) -> list[dict]:
    """One dict per ``seg_k3ip3_shape<S>`` row of a suite folder, by size: side, names, GFLOPs and ms of A and B."""
    rows = []
    for path in suite.glob("seg_k3ip3_shape*/benchmark.json"):
        m = SHAPE_ROW.match(path.parent.name)
        if m is None:
            continue
        r = json.loads(path.read_text())
        rows.append(dict(side=int(m.group(1)), names=r["names"],
                         gflops={k: r["gflops"][k][0] for k in ("A", "B")},
                         ms={k: r["fps"][k]["ms_per_img_median"] for k in ("A", "B")}))
    if not rows:
        raise ValueError(f"{suite}: no seg_k3ip3_shape*/benchmark.json (run tools/run_benchmarks.sh first)")
    return sorted(rows, key=lambda r: r["side"])


def plot_resolution(rows: list[dict], path: Path) -> None:
    """GFLOPs and ms per image of A and B against the input size (log axes), each size labelled A ÷ B."""
    sides = [r["side"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "gflops", "GFLOPs per image"), (axes[1], "ms", "ms per image (CPU, 2 threads)")):
        for k, style in (("A", "o-"), ("B", "s-")):
            ax.plot(sides, [r[key][k] for r in rows], style, label=rows[0]["names"][k])
        ax.set_xticks(sides, [f"{s}²" for s in sides])
        ax.set_yscale("log")
        ax.margins(x=0.12)  # room for the last size's label
        ax.set_xlabel("input size")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        for r in rows:  # the saving at each size, between the two curves (geometric middle on a log axis)
            ax.annotate(f"{r[key]['A'] / r[key]['B']:.2f}×", (r["side"], (r[key]["A"] * r[key]["B"]) ** 0.5),
                        textcoords="offset points", xytext=(4, 0), va="center", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.subplots_adjust(bottom=0.24)  # the legend goes under the axes
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    fig.suptitle("Cost against resolution (labels: A ÷ B)")
    save_figure_atomic(fig, path)
    plt.close(fig)


def plot_gflops_per_image(files: list[Path], path: Path) -> None:
    """One bar per model and image from get_flops JSON files; they must list the same images."""
    runs = [json.loads(f.read_text()) for f in files]
    images = list(runs[0]["per_image"])
    for f, r in zip(files, runs, strict=True):
        if list(r["per_image"]) != images:
            raise ValueError(f"{f}: not the same images as {files[0]}")
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(images)), 3.8))
    for i, r in enumerate(runs):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(images))]
        label = f"{Path(r['config']).stem}: {r['gflops_mean']:.2f} ± {r['gflops_std']:.2f}"
        ax.bar(xs, [r["per_image"][n] for n in images], width, label=label)
    ax.set_xticks(range(len(images)), [Path(n).stem for n in images], fontsize=8)
    ax.set_ylabel("GFLOPs")
    ax.set_ylim(0, 1.45 * max(max(r["per_image"].values()) for r in runs))  # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper center")
    ax.set_title("GFLOPs per image" + (" (oracle clusters)" if any(r.get("oracle_clusters") for r in runs) else ""))
    save_figure_atomic(fig, path)
    plt.close(fig)


def plot(suite: Path | None, gflops: list[Path], out: Path) -> list[Path]:
    """The figures the inputs allow, under ``out``; returns their paths (ValueError: nothing to plot)."""
    written = []
    if suite:
        plot_resolution(resolution_rows(suite), out / "resolution.png")
        written.append(out / "resolution.png")
    if gflops:
        plot_gflops_per_image(gflops, out / "gflops_per_image.png")
        written.append(out / "gflops_per_image.png")
    if not written:
        raise ValueError("nothing to plot: give --suite and/or --gflops")
    return written
