"""GFLOPs (2 x multiply-adds, attention included) of a config's full inference path.

    python tools/get_flops.py CONFIG [--shape H W] [--checkpoint CKPT] [--data-root ROOT --split S]
                              [--oracle-clusters] [--work-dir DIR]

With ``--shape`` (no data): one synthetic input. Over a dataset: every image alone (batch 1; a
sliding-window image counts all its windows), mean ± std, a per-image JSON and a histogram.
The last line printed is ``GFLOPs: <mean> ± <std>``. How FLOPs are counted: ``clustvit/flops.py``.

SUIM: the paper's 252.33 GFLOPs (Segmenter ViT-B, 512²) is for the official head with 9 output classes;
our SUIM configs have the real 8 classes, which costs 0.04 GFLOPs less (252.28). Add
``--cfg-options model.num_classes=9`` to count the official head (252.32).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clustvit.atomic import write_json_atomic  # noqa: E402
from clustvit.bench import common as bench  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="config file, zoo name (python -m clustvit.zoo list) or hub folder")
    p.add_argument("--checkpoint", help="weights to load (default: a zoo name's / hub folder's own, else seeded random)")
    p.add_argument("--work-dir", help="where the JSON and histogram go (default: work_dirs/<config name>)")
    bench.add_input_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    seg, cfg = bench.load_model(args.config, args.checkpoint, args.cfg_options, args.device)
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
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(gflops, bins=min(30, max(5, len(gflops))))
    ax.set(xlabel="GFLOPs per image", ylabel="images", title=f"{Path(args.config).stem}\n{mean:.2f} ± {std:.2f}")
    bench.save_figure_atomic(fig, work / "gflops_hist.png")
    plt.close(fig)
    print(f"wrote {work / 'gflops.json'} and {work / 'gflops_hist.png'}")
    print(f"GFLOPs: {mean:.2f} ± {std:.2f}")
    return result


if __name__ == "__main__":
    from clustvit.cli import run

    run(main)
