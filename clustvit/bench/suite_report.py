"""``clustvit bench report``: Markdown tables from a benchmark folder's JSON files (docs/BENCHMARKS.md).

The folder holds one sub-folder per run (as ``tools/run_benchmarks.sh`` writes them):
``*/benchmark.json`` (``clustvit bench compare``), ``*/kernels.json`` (``bench kernels``),
``*/bench_official.json`` (``bench official``) and ``*/bench_backends.json`` (``bench backends``).
Each kind found becomes one table; rows are named by their sub-folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clustvit.bench.report import markdown_table


def _runs(root: Path, filename: str) -> list[tuple[str, Any]]:
    """(sub-folder name, parsed JSON) of every ``root/*/filename``, sorted by name."""
    out = []
    for path in sorted(root.glob(f"*/{filename}")):
        try:
            out.append((path.parent.name, json.loads(path.read_text())))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    return out


def benchmark_table(runs: list[tuple[str, dict]]) -> str:
    """One row per A/B run: A and B, their speeds, speed-up, FLOP ratio, efficiency."""
    rows = []
    for name, r in runs:
        fps = r["fps"]
        rows.append([f"`{name}`", r["names"]["A"], r["names"]["B"], f"{fps['A']['ms_per_img_median']:.1f}",
                     f"{fps['B']['ms_per_img_median']:.1f}", f"{r['speedup']:.3f}×", f"{r['flop_ratio']:.3f}",
                     f"{r['efficiency']:.3f} ({r['paired_efficiency']:.3f})", f"{r['agreement_pct']:.2f}%"])
    return markdown_table(["run", "A", "B", "A ms/img", "B ms/img", "speed-up", "FLOP ratio", "efficiency (paired)",
                           "same labels"], rows)


def kernels_table(runs: list[tuple[str, list]]) -> str:
    rows = [[r["op"], str(r["tokens"]), r["kernel"], f"{r['ms']:.2f}", f"{r['gflop_s']:.0f}"]
            for _, found in runs for r in found]
    return markdown_table(["op", "tokens", "kernel", "ms", "GFLOP/s"], rows)


def official_table(runs: list[tuple[str, dict]]) -> str:
    rows = [[f"`{name}`", r["name"], str(res["batch_size"]), f"{r['official']['ms_per_img_median']:.1f}",
             f"{r['ours']['ms_per_img_median']:.1f}", f"{r['ratio']:.3f} ({r['paired_ratio']:.3f})",
             f"{r['agreement_pct']:.2f}%"] for name, res in runs for r in res["rows"]]
    return markdown_table(["run", "model", "batch", "official ms/img", "ours ms/img", "ours / official (paired)",
                           "same labels"], rows)


def backends_table(runs: list[tuple[str, dict]]) -> str:
    rows = []
    for _, res in runs:
        for model in res["models"]:
            for backend, row in model["rows"].items():
                if "error" in row:
                    rows.append([model["name"], backend, f"failed: {row['error'][:80]}", "", ""])
                    continue
                gain = f"{row['gain_vs_eager']:.2f}×" if "gain_vs_eager" in row else "–"
                rows.append([model["name"], backend, f"{row['ms_per_img_median']:.1f}", gain,
                             f"{row['agreement_pct']:.2f}%"])
    return markdown_table(["model", "backend", "ms/img", "vs eager", "same labels as eager"], rows)


SECTIONS: tuple[tuple[str, str, Callable[[list], str]], ...] = (  # (file name, heading, table maker)
    ("benchmark.json", "A/B runs (`clustvit bench compare`)", benchmark_table),
    ("kernels.json", "Kernel rates (`clustvit bench kernels`)", kernels_table),
    ("bench_official.json", "Against the official implementation (`clustvit bench official`)", official_table),
    ("bench_backends.json", "Library paths (`clustvit bench backends`)", backends_table),
)


def report(root: Path) -> str:
    """The Markdown for every kind of run found under ``root``."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of benchmark runs")
    parts = []
    for filename, heading, table in SECTIONS:
        runs = _runs(root, filename)
        if runs:
            parts.append(f"#### {heading}\n\n{table(runs)}")
    if not parts:
        raise ValueError(f"{root}: no */benchmark.json, */kernels.json, */bench_official.json or */bench_backends.json")
    return "\n\n".join(parts) + "\n"
