"""Tokens processed per block and in total, for a model and the models it is compared with, same images.

    python tools/count_tokens.py CONFIG CHECKPOINT [--compare CONFIG[:CHECKPOINT] ...] [--oracle-clusters]
                                 [--shape H W | --data-root ROOT --split S] [--work-dir DIR]

Typical use: a ClustViT config, ``--compare`` the ViT config (and the CTS one). Every backbone call
counts (a sliding-window image contributes one row per window). Writes ``tokens.npz`` (one
(calls, depth) array per model) and ``tokens_per_block.png``; prints mean ± std per block and total.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clustvit import loading  # noqa: E402
from clustvit.atomic import atomic_path  # noqa: E402
from clustvit.bench import common as bench  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="config file, zoo name (python -m clustvit.zoo list) or hub folder")
    p.add_argument("checkpoint", nargs="?",
                   help="checkpoint path, or 'none' for random weights (optional after a zoo name / hub folder)")
    p.add_argument("--compare", action="append", default=[], metavar="CONFIG[:CHECKPOINT]",
                   help="another model run on the same images (repeatable; random weights without :CHECKPOINT)")
    p.add_argument("--work-dir", help="where tokens.npz and the plot go (default: work_dirs/<config name>)")
    bench.add_input_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    models = [(args.config, args.checkpoint)]
    for item in args.compare:
        config, _, ckpt = item.partition(":")
        models.append((config, ckpt or None))

    loading.require_checkpoint(args.config, args.checkpoint)
    samples = None
    tokens: dict[str, np.ndarray] = {}
    for config, ckpt in models:
        seg, cfg = bench.load_model(config, ckpt, args.cfg_options, args.device)
        if samples is None:  # the first config decides the images; every model sees the same ones
            samples = bench.inputs_from_args(cfg, args.shape, args.data_root, args.split, args.limit)
        name = Path(config).stem
        tokens[name] = bench.collect_tokens(seg, bench.make_batches(samples, 1), args.oracle_clusters)

    summary = {}
    for name, t in tokens.items():
        total = t.sum(1)
        summary[name] = {"per_block_mean": t.mean(0).tolist(), "per_block_std": t.std(0).tolist(),
                         "total_mean": float(total.mean()), "total_std": float(total.std())}
        print(f"{name} ({t.shape[0]} backbone calls)")
        print("  per block: " + " ".join(f"{m:.1f}±{s:.1f}" for m, s in zip(t.mean(0), t.std(0), strict=True)))
        print(f"  total: {total.mean():.1f} ± {total.std():.1f} tokens")

    work = Path(args.work_dir) if args.work_dir else bench.default_work_dir(args.config)
    with atomic_path(work / "tokens.npz", suffix=".npz") as tmp:  # np.savez appends .npz to other names
        np.savez(tmp, **{f"tokens_{n}": t for n, t in tokens.items()})
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, t in tokens.items():
        x = np.arange(1, t.shape[1] + 1)
        ax.plot(x, t.mean(0), marker="o", label=name)
        ax.fill_between(x, t.mean(0) - t.std(0), t.mean(0) + t.std(0), alpha=0.2)
    ax.set(xlabel="block", ylabel="tokens (cls included)", title="Tokens per block (mean ± std)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    bench.save_figure_atomic(fig, work / "tokens_per_block.png")
    plt.close(fig)
    print(f"wrote {work / 'tokens.npz'} and {work / 'tokens_per_block.png'}")
    return summary


if __name__ == "__main__":
    from clustvit.cli import run

    run(main)
