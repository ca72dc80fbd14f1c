"""Markdown tables from a benchmark folder's JSON files: what docs/BENCHMARKS.md shows, generated.

    python tools/bench_report.py OUT_DIR [--out FILE]

OUT_DIR is a folder of tool outputs, one sub-folder per run (as ``tools/run_benchmarks.sh`` writes them):
``*/benchmark.json`` (``tools/benchmark.py``), ``*/kernels.json`` (``tools/bench_kernels.py``),
``*/bench_official.json`` (``tools/bench_official.py``) and ``*/bench_backends.json``
(``tools/bench_backends.py``). Each kind found becomes one table; rows are named by their sub-folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clustvit.atomic import write_text_atomic  # noqa: E402
from clustvit.cli import run  # noqa: E402


def _runs(root: Path, filename: str) -> list[tuple[str, object]]:
    """(sub-folder name, parsed JSON) of every ``root/*/filename``, sorted by name."""
    out = []
    for path in sorted(root.glob(f"*/{filename}")):
        try:
            out.append((path.parent.name, json.loads(path.read_text())))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    return out


def benchmark_table(runs: list[tuple[str, dict]]) -> list[str]:
    """One row per ``tools/benchmark.py`` run: A and B, their speeds, speed-up, FLOP ratio, efficiency."""
    lines = ["| run | A | B | A ms/img | B ms/img | speed-up | FLOP ratio | efficiency (paired) | same labels |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs:
        fps = r["fps"]
        lines.append(
            f"| `{name}` | {r['names']['A']} | {r['names']['B']} | {fps['A']['ms_per_img_median']:.1f} | "
            f"{fps['B']['ms_per_img_median']:.1f} | {r['speedup']:.3f}× | {r['flop_ratio']:.3f} | "
            f"{r['efficiency']:.3f} ({r['paired_efficiency']:.3f}) | {r['agreement_pct']:.2f}% |")
    return lines


def kernels_table(runs: list[tuple[str, list]]) -> list[str]:
    lines = ["| op | tokens | kernel | ms | GFLOP/s |", "|---|---|---|---|---|"]
    for _, rows in runs:
        lines += [f"| {r['op']} | {r['tokens']} | {r['kernel']} | {r['ms']:.2f} | {r['gflop_s']:.0f} |" for r in rows]
    return lines


def official_table(runs: list[tuple[str, dict]]) -> list[str]:
    lines = ["| run | model | batch | official ms/img | ours ms/img | ours / official (paired) | same labels |",
             "|---|---|---|---|---|---|---|"]
    for name, res in runs:
        for r in res["rows"]:
            lines.append(
                f"| `{name}` | {r['name']} | {res['batch_size']} | {r['official']['ms_per_img_median']:.1f} | "
                f"{r['ours']['ms_per_img_median']:.1f} | {r['ratio']:.3f} ({r['paired_ratio']:.3f}) | "
                f"{r['agreement_pct']:.2f}% |")
    return lines


def backends_table(runs: list[tuple[str, dict]]) -> list[str]:
    lines = ["| model | backend | ms/img | vs eager | same labels as eager |", "|---|---|---|---|---|"]
    for _, res in runs:
        for model in res["models"]:
            for backend, row in model["rows"].items():
                if "error" in row:
                    lines.append(f"| {model['name']} | {backend} | failed: {row['error'][:80]} | | |")
                    continue
                gain = f"{row['gain_vs_eager']:.2f}×" if "gain_vs_eager" in row else "–"
                lines.append(f"| {model['name']} | {backend} | {row['ms_per_img_median']:.1f} | {gain} | "
                             f"{row['agreement_pct']:.2f}% |")
    return lines


SECTIONS = (  # (file name, heading, table maker)
    ("benchmark.json", "A/B runs (`tools/benchmark.py`)", benchmark_table),
    ("kernels.json", "Kernel rates (`tools/bench_kernels.py`)", kernels_table),
    ("bench_official.json", "Against the official implementation (`tools/bench_official.py`)", official_table),
    ("bench_backends.json", "Library paths (`tools/bench_backends.py`)", backends_table),
)


def report(root: Path) -> str:
    """The Markdown for every kind of run found under ``root``."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of benchmark runs")
    parts = []
    for filename, heading, table in SECTIONS:
        runs = _runs(root, filename)
        if runs:
            parts.append("\n".join([f"#### {heading}", "", *table(runs)]))
    if not parts:
        raise ValueError(f"{root}: no */benchmark.json, */kernels.json, */bench_official.json or */bench_backends.json")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", help="folder of benchmark runs (one sub-folder per run)")
    p.add_argument("--out", help="write the Markdown there instead of printing it")
    args = p.parse_args(argv)
    text = report(Path(args.root))
    if args.out:
        write_text_atomic(Path(args.out), text)
    else:
        print(text, end="")
    return text


if __name__ == "__main__":
    run(main)
