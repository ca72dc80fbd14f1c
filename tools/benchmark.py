"""Two models in one process, alternating on the same images: GFLOPs, img/s, peak memory, efficiency.

    python tools/benchmark.py CONFIG_A CONFIG_B [--data-root ROOT --split S | --shape H W]
                              [--oracle-clusters] [--batch-size B] [--batch-size-b B2] [--amp] [--repeats R]

A is the baseline (e.g. ViT), B the candidate (e.g. ClustViT). The last line is
``a_img_s=.. b_img_s=.. flop_ratio=<A GFLOPs / B GFLOPs> speedup=<B img/s / A img/s> efficiency=<speedup / flop_ratio>``.
GFLOPs are per image (each image alone); img/s are medians over ``--repeats`` timed passes, A and B
interleaved (the order flips every repeat so drift hits both alike), after one untimed warm-up pass each.
The line before the last also gives the median of the per-repeat ratios (A and B timed back to back),
which is steadier on a host whose speed drifts.
``--amp-b`` runs only B in bf16: with the same config twice it measures the bf16 gain and the agreement
of the two models' predictions. Both models run accelerated (``clustvit.accel.accelerate``, as every
inference tool does); ``--plain-a`` leaves out A's kernels (``all``, or one of them: ``onednn_linear``,
``head_by_head_attention``): with the same config twice it measures what they buy, in one run.
Against the official implementation itself, use ``tools/bench_official.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clustvit.accel import accelerate, describe, plain  # noqa: E402
from clustvit.atomic import write_json_atomic  # noqa: E402
from clustvit.bench import common as bench  # noqa: E402
from clustvit.inference.runtime import tune_malloc  # noqa: E402

PIECES = tuple(describe(torch.nn.Module()))  # the kernels clustvit.accel installs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config_a")
    p.add_argument("config_b")
    p.add_argument("--checkpoint-a", help="weights of A (default: seeded random)")
    p.add_argument("--checkpoint-b", help="weights of B (default: seeded random)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--batch-size-b", type=int, default=None,
                   help="B's batch size if it differs (e.g. the same config at batch 1 vs 8, in one run)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for both models")
    p.add_argument("--amp-b", action="store_true", help="bf16 autocast for B only")
    p.add_argument("--plain-a", choices=("all", *PIECES), default=None,
                   help="leave out A's accelerated kernels (all, or one): with the same config twice, "
                        "measures what clustvit.accel buys on this host")
    p.add_argument("--repeats", type=int, default=7, help="timed passes per model (default 7)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--work-dir", help="if given, benchmark.json is written there")
    bench.add_input_args(p)
    return p.parse_args(argv)


@torch.no_grad()
def agreement(predict: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor], batches: list) -> float:
    """Share of pixels (in %) where A and B predict the same label; ``predict(k, images, masks)`` gives
    model k's logits."""
    same = total = 0
    for images, masks in batches:
        pa, pb = predict("A", images, masks).argmax(1), predict("B", images, masks).argmax(1)
        same += int((pa == pb).sum())
        total += pa.numel()
    return 100.0 * same / total


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    tune_malloc()  # fewer page faults: docs/BENCHMARKS.md
    if args.threads:
        torch.set_num_threads(args.threads)
    seg_a, cfg_a = bench.load_model(args.config_a, args.checkpoint_a, args.cfg_options, args.device)
    seg_b, _ = bench.load_model(args.config_b, args.checkpoint_b, args.cfg_options, args.device)
    samples = bench.inputs_from_args(cfg_a, args.shape, args.data_root, args.split, args.limit)
    batches = bench.to_device(bench.make_batches(samples, args.batch_size), bench.model_device(seg_a))
    batch_b = args.batch_size_b or args.batch_size
    batches_of = {"A": batches, "B": bench.to_device(bench.make_batches(samples, batch_b), bench.model_device(seg_b))}
    n = len(samples)
    amp = {"A": args.amp, "B": args.amp or args.amp_b}
    segs = {"A": seg_a, "B": seg_b}

    gflops = {k: bench.mean_std([f / 1e9 for f in bench.flops_per_image(s, samples, args.oracle_clusters)])
              for k, s in segs.items()}
    for k in segs:  # after counting FLOPs (on the plain models): amp models keep bf16 matmul weights
        accelerate(segs[k], bench.model_device(segs[k]), torch.bfloat16 if amp[k] else None)
    if args.plain_a:
        plain(segs["A"], PIECES if args.plain_a == "all" else (args.plain_a,))
    kernels = {k: describe(s) for k, s in segs.items()}

    def timed_pass(k: str) -> float:
        return bench.run_pass(segs[k], batches_of[k], args.oracle_clusters, amp[k])

    def predict(k: str, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        with bench.autocast(bench.model_device(segs[k]), amp[k]):
            return bench.infer(segs[k], images, masks, args.oracle_clusters)

    seconds: dict[str, list[float]] = {"A": [], "B": []}
    memory = {}
    for k in ("A", "B"):  # warm-up
        timed_pass(k)
    for r in range(args.repeats):
        for k in ("A", "B") if r % 2 == 0 else ("B", "A"):
            seconds[k].append(timed_pass(k))
    for k in ("A", "B"):
        with bench.peak_memory(bench.model_device(segs[k])) as mem:
            timed_pass(k)
        memory[k] = mem["peak_mib"]
    agree = agreement(predict, batches)
    stats = {k: bench.summarise_runs(seconds[k], n) for k in segs}

    names = {"A": Path(args.config_a).stem, "B": Path(args.config_b).stem}
    print(f"{n} images, batch A {args.batch_size} B {batch_b}, {torch.get_num_threads()} threads, device {args.device}, "
          f"oracle clusters {args.oracle_clusters}, amp A {amp['A']} B {amp['B']}")
    print(f"{'':3}{'model':<58}{'GFLOPs':>18}{'img/s med':>11}{'img/s mean':>11}{'ms/img':>9}{'peak MiB':>10}")
    for k in ("A", "B"):
        g, s = gflops[k], stats[k]
        print(f"{k:3}{names[k][:57]:<58}{g[0]:>10.2f} ± {g[1]:<5.2f}{s['img_s_median']:>11.3f}"
              f"{s['img_s_mean']:>11.3f}{s['ms_per_img_median']:>9.1f}{memory[k]:>10.1f}")
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


if __name__ == "__main__":
    from clustvit.cli import run

    run(main)
