"""Inference throughput (img/s) of a config: warm-up excluded, device synchronised, median and mean.

    python tools/get_fps.py CONFIG CHECKPOINT [--repeat-times N] [--work-dir DIR] [--batch-size B]
                            [--amp] [--compile] [--oracle-clusters] [--shape H W] [--data-root ROOT --split S]

CHECKPOINT may be ``none`` (seeded random weights). One timed run is one pass over every input
image (the test split, or one synthetic ``--shape`` image); ``--repeat-times`` runs are timed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clustvit.atomic import write_json_atomic  # noqa: E402
from clustvit.bench import common as bench  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bench.add_timing_args(p, "fps.json")
    p.add_argument("--repeat-times", type=int, default=7, help="timed passes (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="torch.compile the segmentor (dynamic shapes)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    seg, _, samples = bench.load_for_timing(args)
    if args.compile:
        seg.compile(dynamic=True)
    batches = bench.make_batches(samples, args.batch_size)
    stats = bench.measure_fps(seg, batches, args.repeat_times, args.warmup, args.oracle_clusters, args.amp)
    result = {
        "config": str(args.config), "checkpoint": args.checkpoint, "batch_size": args.batch_size,
        "amp": args.amp, "compile": args.compile, "oracle_clusters": args.oracle_clusters,
        "threads": torch.get_num_threads(), "device": str(bench.model_device(seg)), **stats,
    }
    work = Path(args.work_dir) if args.work_dir else bench.default_work_dir(args.config)
    write_json_atomic(work / "fps.json", result)
    print(f"runs (s): {', '.join(f'{s:.3f}' for s in stats['runs_s'])} over {stats['num_images']} images")
    print(f"latency: {stats['ms_per_img_median']:.1f} ms/img (median)")
    print(f"wrote {work / 'fps.json'}")
    print(f"img/s: median {stats['img_s_median']:.2f} mean {stats['img_s_mean']:.2f} ± {stats['img_s_std']:.2f}")
    return result


if __name__ == "__main__":
    from clustvit.cli import run

    run(main)
