"""``clustvit bench profile``: where one inference spends its time, stage by stage: blocks before and after
merging, the Cluster module, the Regenerator, the merge bookkeeping, the decode head.

Batch 1, wall clock, the same path and weights as ``clustvit bench fps`` (accelerated, malloc tuned). Forward hooks
time each block, the Cluster module, the Regenerator, the backbone and the head; "backbone, other"
is the backbone's time outside those modules: patch embedding and final norm for every ViT, plus
the merge plan, the cluster means and the gathers of regeneration for ClustViT. Its excess over the
ViT's is the bookkeeping cost of merging. "outside the model" is normalisation, the oracle
pseudo-labels and the resize to the input size. Per-image means over ``--repeat-times`` passes after
one warm-up pass; ``stages.json`` holds them.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from clustvit.atomic import write_json_atomic
from clustvit.bench import common as bench
from clustvit.bench.report import text_table
from clustvit.bench.timing import synchronize, time_passes


def stage_modules(seg: nn.Module) -> dict[str, list[nn.Module]]:
    """Stage name -> the modules whose forward time it sums, in forward order."""
    bb = seg.backbone
    ip = getattr(bb, "injection_point", None)
    if ip is None or not hasattr(bb, "cluster"):
        stages = {"blocks": list(bb.blocks)}
    else:
        stages = {
            f"blocks 0-{ip - 1} (full sequence)": list(bb.blocks[:ip]),
            "Cluster module": [bb.cluster],
            f"blocks {ip}-{len(bb.blocks) - 1} (merged sequence)": list(bb.blocks[ip:]),
            "Regenerator": [bb.regenerator],
        }
    return {**stages, "decode head": [seg.decode_head]}


@contextmanager
def timed_modules(groups: dict[str, list[nn.Module]], device: torch.device) -> Iterator[dict[str, float]]:
    """Accumulate the wall seconds spent in each group's forwards while the block runs.

    A stopwatch in forward hooks, not a timing loop: it splits the passes that ``timing.time_passes``
    times; each hook synchronises the device so that a module's queued work counts in its own stage."""
    totals: dict[str, float] = defaultdict(float)
    handles = []
    for name, modules in groups.items():
        for m in modules:
            start: list[float] = []

            def pre(_m: nn.Module, _args: tuple, start: list[float] = start) -> None:
                synchronize(device)
                start.append(time.perf_counter())

            def post(_m: nn.Module, _args: tuple, _out: object, start: list[float] = start, name: str = name) -> None:
                synchronize(device)
                totals[name] += time.perf_counter() - start.pop()

            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        yield totals
    finally:
        for h in handles:
            h.remove()


def profile(seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], oracle: bool, amp: bool,
            repeats: int) -> dict[str, float]:
    """Mean ms per image of every stage, plus ``backbone, other``, ``outside the model`` and ``total``.

    ``batches``: (B, 3, H, W) images and (B, H, W) masks on the model's device."""
    device = bench.model_device(seg)
    groups = {**stage_modules(seg), "backbone": [seg.backbone]}
    bench.forward_pass(seg, batches, oracle, amp)  # warm-up, outside the hooks
    with timed_modules(groups, device) as totals:
        total = sum(time_passes(lambda: bench.forward_pass(seg, batches, oracle, amp), repeats, warmup=0, device=device))
    n = repeats * sum(int(images.shape[0]) for images, _ in batches)
    ms = {k: 1e3 * v / n for k, v in totals.items()}
    inside = sum(v for k, v in ms.items() if k not in ("backbone", "decode head"))
    backbone = ms.pop("backbone")
    ms["backbone, other"] = backbone - inside
    ms["outside the model"] = 1e3 * total / n - backbone - ms["decode head"]
    ms["total"] = 1e3 * total / n
    return ms


def run(args: argparse.Namespace) -> dict:
    """Profile; print one line per stage; write ``WORK_DIR/stages.json``."""
    seg, _, samples = bench.load_for_timing(args)  # the same path as `clustvit bench fps`
    batches = bench.to_device(bench.make_batches(samples, 1), bench.model_device(seg))
    with torch.no_grad():
        ms = profile(seg, batches, args.oracle_clusters, args.amp, args.repeat_times)
    print(f"{Path(args.config).stem}: {len(samples)} image(s), batch 1, {torch.get_num_threads()} threads, "
          f"oracle clusters {args.oracle_clusters}, amp {args.amp}")
    print(text_table(["stage", "ms", "share"],
                     [[name, f"{v:.1f}", f"{100 * v / ms['total']:.1f}%"] for name, v in ms.items()]))
    work = Path(args.work_dir) if args.work_dir else bench.default_work_dir(args.config)
    result = {"config": str(args.config), "checkpoint": args.checkpoint, "num_images": len(samples),
              "amp": args.amp, "oracle_clusters": args.oracle_clusters, "threads": torch.get_num_threads(),
              "device": str(bench.model_device(seg)), "ms_per_image": ms}
    write_json_atomic(work / "stages.json", result)
    return result

