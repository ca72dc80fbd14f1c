"""``clustvit bench compare A B``: two models in one process, alternating on the same images: GFLOPs,
img/s, peak memory, prediction agreement and efficiency (speed-up / FLOP ratio).

A is the baseline (e.g. ViT), B the candidate (e.g. ClustViT). The last line printed is
``a_img_s=.. b_img_s=.. flop_ratio=<A GFLOPs / B GFLOPs> speedup=<B img/s / A img/s> efficiency=<speedup / flop_ratio>``.
GFLOPs are per image (each image alone); img/s are medians over ``--repeats`` timed passes, A and B
interleaved (``timing.time_interleaved``), after one untimed warm-up pass each. The line before the last
gives the median of the per-repeat ratios (A and B timed back to back), steadier on a drifting host.
``--amp-b`` runs only B under autocast: with the same config twice it measures the gain and the
agreement. Both models run accelerated (``clustvit.accel.accelerate``); ``--plain-a`` leaves out A's
kernels (``all``, or one of :data:`PIECES`): with the same config twice it measures what they buy.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from clustvit import loading
from clustvit.accel import accelerate, describe, plain
from clustvit.accel.dtype import amp_dtype
from clustvit.atomic import write_json_atomic
from clustvit.bench import common as bench
from clustvit.bench.memory import peak_memory
from clustvit.bench.report import text_table
from clustvit.bench.timing import autocast, summarise_runs, time_interleaved, time_once
from clustvit.inference.runtime import tune_malloc

PIECES = tuple(describe(torch.nn.Module()))  # the kernels clustvit.accel installs


@torch.no_grad()
def agreement(predict: Callable[[str, Tensor, Tensor], Tensor], batches: Sequence[tuple[Tensor, Tensor]]) -> float:
    """Share of pixels (in %) where A and B predict the same label; ``predict(k, images, masks)`` gives
    model k's (B, n_cls, H, W) logits for (B, 3, H, W) images and (B, H, W) masks."""
    same = total = 0
    for images, masks in batches:
        pa, pb = predict("A", images, masks).argmax(1), predict("B", images, masks).argmax(1)
        same += int((pa == pb).sum())
        total += pa.numel()
    return 100.0 * same / total


def run(args: argparse.Namespace) -> dict:
    """Measure both models; print the table and the summary lines; ``--work-dir``: ``benchmark.json``."""
    tune_malloc()  # fewer page faults: docs/BENCHMARKS.md
    if args.threads:
        torch.set_num_threads(args.threads)
    seg_a, cfg_a = loading.load_model(args.config_a, args.checkpoint_a, args.cfg_options, args.device)
    seg_b, _ = loading.load_model(args.config_b, args.checkpoint_b, args.cfg_options, args.device)
    samples = bench.inputs_from_args(cfg_a, args.shape, args.data_root, args.split, args.limit)
    segs = {"A": seg_a, "B": seg_b}
    devices = {k: bench.model_device(s) for k, s in segs.items()}
    batch_b = args.batch_size_b or args.batch_size
    batches_of = {"A": bench.to_device(bench.make_batches(samples, args.batch_size), devices["A"]),
                  "B": bench.to_device(bench.make_batches(samples, batch_b), devices["B"])}
    n = len(samples)
    amp = {"A": args.amp, "B": args.amp or args.amp_b}

    gflops = {k: bench.mean_std([f / 1e9 for f in bench.flops_per_image(s, samples, args.oracle_clusters)])
              for k, s in segs.items()}
    for k in segs:  # after counting FLOPs (on the plain models): amp models keep low-precision matmul weights
        accelerate(segs[k], devices[k], amp_dtype(devices[k]) if amp[k] else None)
    if args.plain_a:
        plain(segs["A"], PIECES if args.plain_a == "all" else (args.plain_a,))
    kernels = {k: describe(s) for k, s in segs.items()}

    def one_pass(k: str) -> None:
        bench.forward_pass(segs[k], batches_of[k], args.oracle_clusters, amp[k])

    def predict(k: str, images: Tensor, masks: Tensor) -> Tensor:
        with autocast(devices[k], amp[k]):
            return bench.infer(segs[k], images, masks, args.oracle_clusters)

    seconds = time_interleaved({k: (lambda k=k: time_once(lambda: one_pass(k), devices[k])) for k in ("A", "B")},
                               args.repeats)
    memory = {}
    for k in ("A", "B"):
        with peak_memory(devices[k]) as mem:
            one_pass(k)
        memory[k] = mem["peak_mib"]
    agree = agreement(predict, batches_of["A"])
    stats = {k: summarise_runs(seconds[k], n) for k in segs}

    names = {"A": Path(args.config_a).stem, "B": Path(args.config_b).stem}
    print(f"{n} images, batch A {args.batch_size} B {batch_b}, {torch.get_num_threads()} threads, device {args.device}, "
          f"oracle clusters {args.oracle_clusters}, amp A {amp['A']} B {amp['B']}")
    print(text_table(["", "model", "GFLOPs", "img/s med", "img/s mean", "ms/img", "peak MiB"],
                     [[k, names[k], f"{gflops[k][0]:.2f} ± {gflops[k][1]:.2f}", f"{stats[k]['img_s_median']:.3f}",
                       f"{stats[k]['img_s_mean']:.3f}", f"{stats[k]['ms_per_img_median']:.1f}", f"{memory[k]:.1f}"]
                      for k in ("A", "B")], align="llrrrrr"))
    print(f"prediction agreement A vs B: {agree:.2f}% of pixels")
    a_ips, b_ips = stats["A"]["img_s_median"], stats["B"]["img_s_median"]
    flop_ratio = gflops["A"][0] / gflops["B"][0]
    speedup = b_ips / a_ips
    # Each repeat times A and B back to back, so their ratio cancels the host's slow drift; the median
    # of those ratios is steadier than the ratio of the two medians (which the last line reports).
    paired = statistics.median((sa / stats["A"]["num_images"]) / (sb / stats["B"]["num_images"])
                               for sa, sb in zip(seconds["A"], seconds["B"], strict=True))
    print(f"paired speedup (median over repeats of A's time / B's time, per image): {paired:.4f}, "
          f"efficiency {paired / flop_ratio:.4f}")
    result = {"names": names, "gflops": gflops, "fps": stats, "peak_mib": memory, "agreement_pct": agree,
              "flop_ratio": flop_ratio, "speedup": speedup, "efficiency": speedup / flop_ratio,
              "paired_speedup": paired, "paired_efficiency": paired / flop_ratio,
              "batch_size": {"A": args.batch_size, "B": batch_b}, "amp": amp, "oracle_clusters": args.oracle_clusters,
              "threads": torch.get_num_threads(), "device": args.device, "kernels": kernels}
    if args.work_dir:
        write_json_atomic(Path(args.work_dir) / "benchmark.json", result)
    print(f"a_img_s={a_ips:.4f} b_img_s={b_ips:.4f} flop_ratio={flop_ratio:.4f} speedup={speedup:.4f} "
          f"efficiency={speedup / flop_ratio:.4f}")
    return result
