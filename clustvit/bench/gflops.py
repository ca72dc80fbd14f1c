"""``clustvit bench flops``: GFLOPs (2 x multiply-adds, attention included) of a model's inference path.

With ``--shape`` (no data): one synthetic input. Over a dataset: every image alone (batch 1; a
sliding-window image counts all its windows), mean ± std, a per-image JSON and a histogram. The last
line printed is ``GFLOPs: <mean> ± <std>``. How FLOPs are counted: ``clustvit.bench.flops``.

SUIM: the paper's 252.33 GFLOPs (Segmenter ViT-B, 512²) is for the official head with 9 output classes;
our SUIM configs have the real 8 classes, which costs 0.04 GFLOPs less (252.28). Add
``--cfg-options model.num_classes=9`` to count the official head (252.32).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from clustvit import loading
from clustvit.atomic import write_json_atomic
from clustvit.bench import common as bench


def histogram(gflops: Sequence[float], title: str, path: Path) -> None:
    """A histogram of per-image GFLOPs, saved atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(gflops, bins=min(30, max(5, len(gflops))))
    ax.set(xlabel="GFLOPs per image", ylabel="images", title=title)
    bench.save_figure_atomic(fig, path)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    """Count, write ``WORK_DIR/gflops.json`` and ``gflops_hist.png``, print one line per image."""
    seg, cfg = loading.load_model(args.config, args.checkpoint, args.cfg_options, args.device)
    samples = bench.inputs_from_args(cfg, args.shape, args.data_root, args.split, args.limit)
    gflops = [f / 1e9 for f in bench.flops_per_image(seg, samples, args.oracle_clusters)]
    mean, std = bench.mean_std(gflops)
    for s, g in zip(samples, gflops, strict=True):
        print(f"{s.name}: {g:.2f} GFLOPs ({s.image.shape[1]}x{s.image.shape[2]})")

    work = Path(args.work_dir) if args.work_dir else bench.default_work_dir(args.config)
    result = {
        "config": str(args.config), "checkpoint": args.checkpoint, "oracle_clusters": args.oracle_clusters,
        "num_images": len(gflops), "gflops_mean": mean, "gflops_std": std,
        "per_image": {s.name: g for s, g in zip(samples, gflops, strict=True)},
    }
    write_json_atomic(work / "gflops.json", result)
    histogram(gflops, f"{Path(args.config).stem}\n{mean:.2f} ± {std:.2f}", work / "gflops_hist.png")
    print(f"wrote {work / 'gflops.json'} and {work / 'gflops_hist.png'}")
    print(f"GFLOPs: {mean:.2f} ± {std:.2f}")
    return result
