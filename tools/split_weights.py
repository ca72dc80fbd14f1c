"""Save a checkpoint's backbone and head weights apart (safetensors), or merge such parts back.

    python tools/split_weights.py CHECKPOINT [--out-dir DIR]        # -> DIR/backbone.safetensors, decode_head...
    python tools/split_weights.py DIR --merge --out merged.pth      # the inverse

Official (mmseg) and our own checkpoints are accepted; parts use our parameter names. CHECKPOINT may be a
zoo name (``python -m clustvit.zoo list``): its released file, downloaded once (default parts folder:
``work_dirs/<name>_parts``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from clustvit.convert.split import format_split, merge_parts, split_checkpoint  # noqa: E402
from clustvit.zoo import ZOO, fetch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="checkpoint file to split, or (with --merge) the folder holding the parts")
    parser.add_argument("--out-dir", help="where the parts go (default: CHECKPOINT's stem + '_parts')")
    parser.add_argument("--merge", action="store_true", help="merge SOURCE/{backbone,decode_head}.safetensors")
    parser.add_argument("--out", help="with --merge: the checkpoint to write (default: SOURCE/merged.pth)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    src = Path(args.source)
    try:
        if not args.merge and not src.exists() and args.source in ZOO:
            src = fetch(ZOO[args.source])
            args.out_dir = args.out_dir or str(Path("work_dirs") / f"{args.source}_parts")
        if args.merge:
            summary = merge_parts(src, args.out or src / "merged.pth")
            text = f"merged {summary['tensors']} tensors ({summary['params'] / 1e6:.3f} M params) -> {summary['file']}"
        else:
            summary = split_checkpoint(src, args.out_dir or src.with_name(f"{src.stem}_parts"))
            text = format_split(summary)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
