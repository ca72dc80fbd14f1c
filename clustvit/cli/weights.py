"""``clustvit weights split|merge``: a checkpoint's backbone and head weights apart (safetensors), and back.

    clustvit weights split CHECKPOINT [--out-dir DIR]     # -> DIR/backbone.safetensors, DIR/decode_head.safetensors
    clustvit weights merge DIR [--out merged.pth]         # the inverse

Official (mmseg) and our own checkpoints are accepted; parts use our parameter names. CHECKPOINT may be a
zoo name (``clustvit zoo list``): its released file, downloaded once (default parts folder:
``work_dirs/<name>_parts``). Exit status: 0 written; 2 a missing or unreadable file (one line).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clustvit.convert.split import format_split, merge_parts, split_checkpoint
from clustvit.zoo import ZOO, fetch


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="weights_command", metavar="SUBCOMMAND")
    s = sub.add_parser("split", help="CHECKPOINT -> DIR/{backbone,decode_head}.safetensors",
                       description="Save a checkpoint's backbone and decode-head weights as two safetensors files.")
    s.add_argument("source", metavar="CHECKPOINT", help="checkpoint file (ours or official) or zoo name")
    s.add_argument("--out-dir", help="where the parts go (default: CHECKPOINT's stem + '_parts')")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=split)
    m = sub.add_parser("merge", help="DIR/{backbone,decode_head}.safetensors -> one checkpoint",
                       description="Merge DIR/{backbone,decode_head}.safetensors back into one checkpoint.")
    m.add_argument("source", metavar="DIR", help="the folder holding the parts")
    m.add_argument("--out", help="the checkpoint to write (default: DIR/merged.pth)")
    m.add_argument("--json", action="store_true", help="print the summary as JSON")
    m.set_defaults(func=merge)


def split(args: argparse.Namespace) -> int:
    src, out_dir = Path(args.source), args.out_dir
    if not src.exists() and args.source in ZOO:  # a zoo name: its released file (downloaded once)
        src = fetch(ZOO[args.source])
        out_dir = out_dir or str(Path("work_dirs") / f"{args.source}_parts")
    summary = split_checkpoint(src, out_dir or src.with_name(f"{src.stem}_parts"))
    print(json.dumps(summary, indent=1) if args.json else format_split(summary))
    return 0


def merge(args: argparse.Namespace) -> int:
    src = Path(args.source)
    summary = merge_parts(src, args.out or src / "merged.pth")
    print(json.dumps(summary, indent=1) if args.json else
          f"merged {summary['tensors']} tensors ({summary['params'] / 1e6:.3f} M params) -> {summary['file']}")
    return 0
