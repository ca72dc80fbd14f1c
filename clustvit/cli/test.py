"""``clustvit test CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out DIR]``: evaluate a checkpoint.

CHECKPOINT may be one of ours (``iter_N.pth``) or an official mmseg ClustViT/ViT checkpoint. Instead of
CONFIG CHECKPOINT: a zoo name (``clustvit zoo list``; downloaded once) or a hub-style folder.
The official SUIM checkpoints' 9 outputs map onto our 8 classes, scored as the official masks label
them (SR counts as waterbody) so the mIoU compares with the seed's; ``--our-labels`` scores all 8.
Prints aAcc, mIoU, mAcc, the per-class IoU/Acc table and the size-stratified recall, and writes
them to ``WORK_DIR/results.json``. Exit status: 0 done; 2 bad config, checkpoint or data (one line).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clustvit.engine.tester import run_test
from clustvit.inference.runtime import tune_malloc
from clustvit.loading import no_checkpoint, require_checkpoint


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("config", help="config file or name, zoo name or hub-style folder")
    p.add_argument("checkpoint", nargs="?", help="weights (optional for a zoo name or hub folder)")
    p.add_argument("--work-dir", help="where results.json goes (default: the checkpoint's folder; "
                   "work_dirs/<name> for a zoo name or hub folder)")
    p.add_argument("--show-dir", help="write image | ground truth | prediction panels here")
    p.add_argument("--out", help="write predicted label PNGs here")
    p.add_argument("--split", default="test", choices=("val", "test"), help="dataset split (default: test)")
    p.add_argument("--amp", action="store_true", help="mixed precision in clustvit.accel.amp_dtype: bfloat16 (float16 only on GPUs without bfloat16)")
    p.add_argument("--no-accel", action="store_true", help="the plain model, without clustvit.accel's kernels")
    p.add_argument("--our-labels", action="store_true",
                   help="official SUIM checkpoints: score our 8 classes as they are (SR scores 0)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; a bad config, checkpoint or data file raises ValueError (the dispatcher: one line, exit 2)."""
    tune_malloc()  # reuse freed activations instead of page-faulting fresh memory (clustvit/inference/runtime.py)
    require_checkpoint(args.config, args.checkpoint)
    if args.work_dir:
        work_dir = args.work_dir
    elif args.checkpoint is not None and not no_checkpoint(args.checkpoint):
        work_dir = str(Path(args.checkpoint).resolve().parent)
    else:
        work_dir = str(Path("work_dirs") / Path(str(args.config)).stem)
    run_test(args.config, args.checkpoint, work_dir, args.show_dir, args.out, amp=args.amp, split=args.split,
             cfg_options=args.cfg_options, official_scoring=not args.our_labels, accel=not args.no_accel)
    return 0
