"""``clustvit bench fps``: inference throughput (img/s) of one model, warm-up excluded, device synchronised.

One timed run is one pass over every input image (the test split, or one synthetic ``--shape`` image);
``--repeat-times`` runs are timed; ``fps.json`` holds their median and mean.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from clustvit.atomic import write_json_atomic
from clustvit.bench import common as bench
from clustvit.bench.timing import summarise_runs, time_passes


def measure_fps(
    seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], repeats: int = 7, warmup: int = 1,
    oracle: bool = False, amp: bool = False,
) -> dict:
    """Time ``repeats`` passes over all (B, 3, H, W) image / (B, H, W) mask batches after ``warmup``
    untimed passes: :func:`clustvit.bench.timing.summarise_runs` (median and mean img/s)."""
    device = bench.model_device(seg)
    batches = bench.to_device(batches, device)
    seconds = time_passes(lambda: bench.forward_pass(seg, batches, oracle, amp), repeats, warmup, device)
    return summarise_runs(seconds, sum(int(i.shape[0]) for i, _ in batches))


def run(args: argparse.Namespace) -> dict:
    """Measure, write ``WORK_DIR/fps.json``, print; the last line is ``img/s: median M mean A ± S``."""
    seg, _, samples = bench.load_for_timing(args)
    if args.compile:
        seg.compile(dynamic=True)
    batches = bench.make_batches(samples, args.batch_size)
    stats = measure_fps(seg, batches, args.repeat_times, args.warmup, args.oracle_clusters, args.amp)
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
