"""Evaluate a checkpoint: ``python test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out DIR]``.

CHECKPOINT may be one of ours (``iter_N.pth``) or an official mmseg ClustViT/ViT checkpoint.
Prints aAcc, mIoU, mAcc, the per-class IoU/Acc table and the size-stratified recall, and writes
them to ``WORK_DIR/results.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynseg.config import ConfigError, load_config
from dynseg.engine.tester import run_test
from dynseg.runtime import tune_malloc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--work-dir", help="where results.json goes (default: the checkpoint's folder)")
    p.add_argument("--show-dir", help="write image | ground truth | prediction panels here")
    p.add_argument("--out", help="write predicted label PNGs here")
    p.add_argument("--split", default="test", choices=("val", "test"), help="dataset split (default: test)")
    p.add_argument("--amp", action="store_true", help="bf16 (CPU) / fp16 (CUDA) autocast")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tune_malloc()  # reuse freed activations instead of page-faulting fresh memory (dynseg/runtime.py)
    try:
        cfg = load_config(args.config, args.cfg_options)
        work_dir = args.work_dir or str(Path(args.checkpoint).resolve().parent)
        run_test(cfg, args.checkpoint, work_dir, args.show_dir, args.out, amp=args.amp, split=args.split)
    except (ConfigError, ValueError) as e:  # includes unreadable/mismatched checkpoints and bad data
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
