"""``clustvit bench SUBCOMMAND``: the efficiency tools (``clustvit bench --help`` lists them).

Argument parsing only; every measurement lives in ``clustvit.bench``. The seed's scripts
(``tools/get_fps.py``, ``get_flops.py``, ``count_tokens.py``, ...) are shims over these subcommands.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from clustvit.atomic import write_text_atomic
from clustvit.bench import (
    backends,
    compare,
    device_run,
    fps,
    gflops,
    kernels,
    official,
    plot,
    stages,
    suite_report,
    tables,
    tokens,
)
from clustvit.zoo.paper import TABLES

MODEL_HELP = "config file, zoo name (clustvit zoo list) or hub folder"
CHECKPOINT_HELP = "checkpoint path, or 'none' for random weights (optional after a zoo name / hub folder)"


def add_input_args(p: argparse.ArgumentParser) -> None:
    """The input flags every model-running subcommand shares."""
    p.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), help="one synthetic HxW input")
    p.add_argument("--data-root", help="dataset root (default: the config's data.root)")
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--oracle-clusters", action="store_true",
                   help="ClustViT clusters from the masks' pseudo-labels (upper-bound analysis mode)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")


def add_timing_args(p: argparse.ArgumentParser, output: str) -> None:
    """CONFIG, CHECKPOINT, ``--amp``, ``--no-accel``, ``--threads``, ``--work-dir`` (where ``output`` goes)
    and the input flags: what the one-model timing subcommands (fps, profile) share."""
    p.add_argument("config", help=MODEL_HELP)
    p.add_argument("checkpoint", nargs="?", help=CHECKPOINT_HELP)
    p.add_argument("--amp", action="store_true", help="autocast in the device's amp dtype (bfloat16 on CPU)")
    p.add_argument("--no-accel", action="store_true", help="time the plain model, without clustvit.accel's kernels")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--work-dir", help=f"where {output} goes (default: work_dirs/<config name>)")
    add_input_args(p)


def _status(fn: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """A handler: run ``fn(args)`` (it prints and writes its outputs); exit status 0, or ``fn``'s own int."""
    def handler(args: argparse.Namespace) -> int:
        result = fn(args)
        return result if isinstance(result, int) else 0

    return handler


def _add(sub: argparse._SubParsersAction, name: str, fn: Callable[[argparse.Namespace], Any],
         help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    p.set_defaults(func=_status(fn))
    return p


def _report(args: argparse.Namespace) -> int:
    text = suite_report.report(Path(args.root))
    if args.out:
        write_text_atomic(Path(args.out), text)
    else:
        print(text, end="")
    return 0


def _plot(args: argparse.Namespace) -> int:
    for path in plot.plot(args.suite, args.gflops, args.out):
        print(f"wrote {path}")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")

    p = _add(sub, "fps", fps.run, "inference throughput (img/s): warm-up excluded, device synchronised, median and mean")
    add_timing_args(p, "fps.json")
    p.add_argument("--repeat-times", type=int, default=7, help="timed passes (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="torch.compile the segmentor (dynamic shapes)")

    p = _add(sub, "flops", gflops.run, "GFLOPs (2 x multiply-adds, attention included) of the inference path")
    p.add_argument("config", help=MODEL_HELP)
    p.add_argument("--checkpoint", help="weights to load (default: a zoo name's / hub folder's own, else seeded random)")
    p.add_argument("--work-dir", help="where the JSON and histogram go (default: work_dirs/<config name>)")
    add_input_args(p)

    p = _add(sub, "tokens", tokens.run, "tokens per block and in total, for a model and others on the same images")
    p.add_argument("config", help=MODEL_HELP)
    p.add_argument("checkpoint", nargs="?", help=CHECKPOINT_HELP)
    p.add_argument("--compare", action="append", default=[], metavar="CONFIG[:CHECKPOINT]",
                   help="another model run on the same images (repeatable; random weights without :CHECKPOINT)")
    p.add_argument("--work-dir", help="where tokens.npz, tokens.json and the plot go (default: work_dirs/<config name>)")
    add_input_args(p)

    p = _add(sub, "compare", compare.run, "two models alternating on the same images: GFLOPs, img/s, memory, efficiency")
    p.add_argument("config_a", help="the baseline A: " + MODEL_HELP)
    p.add_argument("config_b", help="the candidate B")
    p.add_argument("--checkpoint-a", help="weights of A (default: seeded random)")
    p.add_argument("--checkpoint-b", help="weights of B (default: seeded random)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--batch-size-b", type=int, help="B's batch size if it differs (e.g. the same config at 1 vs 8)")
    p.add_argument("--amp", action="store_true", help="autocast (the device's amp dtype) for both models")
    p.add_argument("--amp-b", action="store_true", help="autocast for B only")
    p.add_argument("--plain-a", choices=("all", *compare.PIECES), default=None,
                   help="leave out A's accelerated kernels (all, or one): with the same config twice, "
                        "measures what clustvit.accel buys on this host")
    p.add_argument("--repeats", type=int, default=7, help="timed passes per model (default 7)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--work-dir", help="if given, benchmark.json is written there")
    add_input_args(p)

    p = _add(sub, "official", official.run, "ours against the official ClustViT code: same images, weights, threads")
    p.add_argument("--official-src", required=True, help="an official ClustViT checkout (DTU-PAS/clustvit)")
    p.add_argument("--official-python", help="the official environment's python (default: DIR/../venv/bin/python)")
    p.add_argument("--pair", nargs=2, action="append", metavar=("OURS", "OFFICIAL"),
                   help="our config and the official config (relative to --official-src) of one model; "
                        "repeatable (default: Segmenter ViT-b and ClustViT-b k3/ip3 on SUIM)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="timed passes per side (default 7)")
    p.add_argument("--threads", type=int, help="intra-op threads of both sides (default: torch's choice here)")
    p.add_argument("--work-dir", help="if given, bench_official.json and the worker logs are written there")
    add_input_args(p)

    p = _add(sub, "backends", backends.run, "our CPU path against eager, torch.compile, onnxruntime and OpenVINO")
    p.add_argument("--config", action="append", help="repeatable (default: Segmenter ViT-b and ClustViT-b on SUIM)")
    p.add_argument("--backends", nargs="+", default=backends.BACKENDS, choices=backends.BACKENDS, metavar="NAME",
                   help=f"default: all of {' '.join(backends.BACKENDS)}")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per backend (default 5)")
    p.add_argument("--threads", type=int, help="intra-op threads of every backend (default: torch's choice)")
    p.add_argument("--work-dir", help="bench_backends.json and the .onnx graphs go there")
    add_input_args(p)

    p = _add(sub, "kernels", kernels.run, "GFLOP/s of a ViT-B forward's kernels on this machine, per kernel choice")
    p.add_argument("--tokens", type=int, nargs="+", default=[1025, 222], help="sequence lengths")
    p.add_argument("--dim", type=int, default=768, help="embedding width (ViT-B: 768)")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--work-dir", help="if given, kernels.json is written there")

    p = _add(sub, "profile", stages.run, "where one inference spends its time, stage by stage")
    add_timing_args(p, "stages.json")
    p.add_argument("--repeat-times", type=int, default=3, help="timed passes over the images (default 3)")

    p = _add(sub, "report", _report, "Markdown tables from a benchmark folder's JSON files")
    p.add_argument("root", help="folder of benchmark runs (one sub-folder per run)")
    p.add_argument("--out", help="write the Markdown there instead of printing it")

    p = _add(sub, "plot", _plot, "the figures of docs/BENCHMARKS.md from the commands' outputs")
    p.add_argument("--suite", type=Path, help="a tools/run_benchmarks.sh output folder")
    p.add_argument("--gflops", type=Path, nargs="+", default=[], help="`clustvit bench flops` JSON files, same images")
    p.add_argument("--out", type=Path, required=True)

    p = _add(sub, "tables", tables.run, "reproduce a seed result table: every row measured beside the paper's")
    p.add_argument("table", help=f"one of {', '.join(TABLES)} (or of --tables)")
    p.add_argument("--data-root", help="dataset root (default: each config's data.root)")
    p.add_argument("--zoo", action="store_true", help="use the released checkpoint of rows that have one")
    p.add_argument("--work-dirs", nargs="+", default=[], metavar="DIR", help="folders of `clustvit train` runs")
    p.add_argument("--checkpoint", action="append", default=[], metavar="ROW=PATH", help="one row's weights")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="only these rows")
    p.add_argument("--tables", help="a JSON file of tables in clustvit/zoo/paper.py's form (instead of the seed's)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="img/s and GFLOPs on the first N images only (mIoU: all)")
    p.add_argument("--repeat-times", type=int, default=3, help="timed passes for img/s (default 3)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="where results.json and table.md go (default: work_dirs/reproduce_<table>)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="overrides for every row")

    p = _add(sub, "device", device_run.run, "one prepared check of a device: correctness, speed, GPU training paths")
    p.add_argument("--device", choices=("cuda", "cpu"), required=True)
    p.add_argument("--out", required=True, type=Path, help="folder for device_check.json and device_check.md")
    p.add_argument("--smoke", action="store_true", help="tiny models, few iterations (CPU test of the check)")
    p.add_argument("--fixtures", type=Path, default=device_run.DEFAULT_FIXTURES, help="parity fixture folder")
    p.add_argument("--data-root", type=Path, default=device_run.DEFAULT_SUIM,
                   help="SUIM root: raw samples (TEST/images, TEST/masks/*.bmp; converted in a temporary copy) "
                        "or a prepared root (TEST/masks_label)")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="inference batch sizes (default 1 8 32; smoke 1 4)")
    p.add_argument("--iters", type=int, help="timed iterations per row (default 20; smoke 2)")
    p.add_argument("--warmup", type=int, help="untimed iterations first (default 3; smoke 1)")
    p.add_argument("--train-batch", type=int, help="training-step batch (default 8; smoke 2)")
    p.add_argument("--sync-batch", type=int, default=8, help="batch of the host-sync count")
    p.add_argument("--compile-backend", help="torch.compile backend (default inductor; smoke eager)")
    p.add_argument("--skip-compile", action="store_true", help="no compiled rows")
    p.add_argument("--compile-models", nargs="+", choices=list(device_run.MODELS), metavar="NAME",
                   help=f"models timed compiled, in this order (default {device_run.COMPILE_ORDER}; "
                        f"smoke {device_run.SMOKE_COMPILED!r})")
    p.add_argument("--compile-batch-sizes", type=int, nargs="+", help="batch sizes timed compiled (default "
                   "--batch-sizes; smoke 4: each new batch size costs a recompile)")
    p.add_argument("--limit", type=int, help="use the first N SUIM samples (default all; smoke 3)")
    p.add_argument("--budget-s", type=float, default=330.0, help="compile no further model after this many seconds")
