"""``clustvit bench tokens``: tokens processed per block and in total, for a model and the models it is
compared with (``--compare``), on the same images.

Every backbone call counts (a sliding-window image contributes one row per window). Writes
``tokens.npz`` (one (calls, depth) array per model), ``tokens.json`` (mean ± std per block and in total)
and ``tokens_per_block.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clustvit import loading
from clustvit.atomic import atomic_path, write_json_atomic
from clustvit.bench import common as bench


def summarise(tokens: np.ndarray) -> dict:
    """Mean and std over backbone calls of a (calls, depth) token count, per block and in total."""
    total = tokens.sum(1)
    return {"per_block_mean": tokens.mean(0).tolist(), "per_block_std": tokens.std(0).tolist(),
            "total_mean": float(total.mean()), "total_std": float(total.std())}


def plot(tokens: dict[str, np.ndarray], path: Path) -> None:
    """Mean ± std tokens per block of each model's (calls, depth) array, saved atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, t in tokens.items():
        x = np.arange(1, t.shape[1] + 1)
        ax.plot(x, t.mean(0), marker="o", label=name)
        ax.fill_between(x, t.mean(0) - t.std(0), t.mean(0) + t.std(0), alpha=0.2)
    ax.set(xlabel="block", ylabel="tokens (cls included)", title="Tokens per block (mean ± std)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    bench.save_figure_atomic(fig, path)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    """Count every model's tokens on the first model's inputs; returns {model name: :func:`summarise`}."""
    models = [(args.config, args.checkpoint)]
    for item in args.compare:
        config, _, ckpt = item.partition(":")
        models.append((config, ckpt or None))

    loading.require_checkpoint(args.config, args.checkpoint)
    samples = None
    tokens: dict[str, np.ndarray] = {}
    for config, ckpt in models:
        seg, cfg = loading.load_model(config, ckpt, args.cfg_options, args.device)
        if samples is None:  # the first config decides the images; every model sees the same ones
            samples = bench.inputs_from_args(cfg, args.shape, args.data_root, args.split, args.limit)
        tokens[Path(config).stem] = bench.collect_tokens(seg, bench.make_batches(samples, 1), args.oracle_clusters)

    summary = {name: summarise(t) for name, t in tokens.items()}
    for name, t in tokens.items():
        print(f"{name} ({t.shape[0]} backbone calls)")
        print("  per block: " + " ".join(f"{m:.1f}±{s:.1f}" for m, s in zip(t.mean(0), t.std(0), strict=True)))
        print(f"  total: {summary[name]['total_mean']:.1f} ± {summary[name]['total_std']:.1f} tokens")

    work = Path(args.work_dir) if args.work_dir else bench.default_work_dir(args.config)
    with atomic_path(work / "tokens.npz", suffix=".npz") as tmp:  # np.savez appends .npz to other names
        np.savez(tmp, **{f"tokens_{n}": t for n, t in tokens.items()})
    write_json_atomic(work / "tokens.json", summary)
    plot(tokens, work / "tokens_per_block.png")
    print(f"wrote {work / 'tokens.npz'}, {work / 'tokens.json'} and {work / 'tokens_per_block.png'}")
    return summary
