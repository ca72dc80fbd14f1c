"""``clustvit data suim ROOT`` | ``clustvit data rumexweeds ROOT``: prepare a dataset for training.

``suim``: converts the SUIM RGB masks to label PNGs, writing ``masks_label/`` beside every
``{train_val,test,TEST}/masks`` folder (clustvit/data/prep_suim.py). ``rumexweeds``: reads
``dataset_splits/*random_{train,val,test}.txt`` and each sequence's ``annotations_seg.xml``, writes
``processed/{split}/{images,masks}`` (clustvit/data/prep_rumexweeds.py).
Exit status: 0 every file prepared; 1 some files failed (each named on stderr; the good ones are
still written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clustvit.data.prep_rumexweeds import prepare_rumexweeds
from clustvit.data.prep_suim import convert_suim


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    s = sub.add_parser("suim", help="convert SUIM RGB masks to label PNGs (masks_label/)",
                       description="Convert SUIM RGB masks to label PNGs: masks_label/ beside every "
                                   "{train_val,test,TEST}/masks folder.")
    s.add_argument("root", metavar="SUIM_ROOT", help="folder holding train_val/ and test/ (or TEST/)")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.set_defaults(func=suim)
    r = sub.add_parser("rumexweeds", help="RumexWeeds polygons to processed/{split}/{images,masks}",
                       description="Prepare RumexWeeds: the random splits' images and their rendered "
                                   "annotations_seg.xml polygons under processed/{train,val,test}/{images,masks}.")
    r.add_argument("root", metavar="RUMEX_ROOT", help="folder holding dataset_splits/ and the collection folders")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    r.set_defaults(func=rumexweeds)


def suim(args: argparse.Namespace) -> int:
    report = convert_suim(args.root, progress=not args.no_progress)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in report.errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"SUIM: {report.converted} masks converted, {report.resized} resized, {len(report.errors)} failed")
    return 1 if report.errors else 0


def rumexweeds(args: argparse.Namespace) -> int:
    report = prepare_rumexweeds(args.root, progress=not args.no_progress)
    for line in report.errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"RumexWeeds: {report.converted} images prepared in {Path(args.root) / 'processed'}, "
          f"{len(report.errors)} failed")
    return 1 if report.errors else 0
