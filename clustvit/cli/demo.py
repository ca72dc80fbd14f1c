"""``clustvit demo`` (``make demo``): train a small ClustViT and the matching ViT, evaluate, compare.

Both models train from scratch on the synthetic dataset (generated on the fly, nothing to download)
with the real training loop, then run on its held-out test split. The summary table gives each
model's mIoU, the share of tokens ClustViT keeps after merging, and inference speed; the same rows go
to ``WORK_DIR/demo_results.json``. ``--cfg-options schedule.max_iters=2`` makes it a smoke test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from clustvit.atomic import write_json_atomic
from clustvit.configs import load_config
from clustvit.engine.demo import MODELS, format_table, run_one


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("--work-dir", default="work_dirs/demo", help="where both runs go (default: work_dirs/demo)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides for both configs, e.g. schedule.max_iters=50 for a smoke test")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the data worker takes the other core, and tiny "
                        "models gain little from a second thread while losing a lot when the CPU is shared)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Both runs, then the table and the JSON; a bad override raises ConfigError (a ValueError: exit 2)."""
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = [run_one(name, path, Path(args.work_dir) / name, args.cfg_options) for name, path in MODELS.items()]
    num_classes = load_config(MODELS["ViT"], args.cfg_options)["model"]["num_classes"]
    print("\n" + format_table(rows, num_classes))
    print(f"total {time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} threads")
    write_json_atomic(Path(args.work_dir) / "demo_results.json", rows)
    return 0
