"""Convert SUIM RGB masks to label PNGs: ``python tools/suim_mask_convert.py SUIM_ROOT``.

Writes ``masks_label/`` beside every ``{train_val,test,TEST}/masks`` folder (see clustvit/data/prep_suim.py).
Exits non-zero if any file failed; every good file is still converted.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from clustvit.data.prep_suim import convert_suim  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suim_root", help="folder holding train_val/ and test/ (or TEST/)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    report = convert_suim(args.suim_root, progress=not args.no_progress)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in report.errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"SUIM: {report.converted} masks converted, {report.resized} resized, {len(report.errors)} failed")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
