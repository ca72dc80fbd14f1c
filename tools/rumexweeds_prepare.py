"""Prepare RumexWeeds for training: ``python tools/rumexweeds_prepare.py RUMEX_ROOT``.

Reads ``dataset_splits/*random_{train,val,test}.txt`` and each sequence's ``annotations_seg.xml``, writes
``processed/{split}/{images,masks}`` (see clustvit/data/prep_rumexweeds.py). Exits non-zero if any file failed.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from clustvit.data.prep_rumexweeds import prepare_rumexweeds  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rumex_root", help="folder holding dataset_splits/ and the collection folders")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    report = prepare_rumexweeds(args.rumex_root, progress=not args.no_progress)
    for line in report.errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"RumexWeeds: {report.converted} images prepared in {Path(args.rumex_root) / 'processed'}, "
          f"{len(report.errors)} failed")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
