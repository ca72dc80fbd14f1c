"""``clustvit data check DIR|CONFIG`` | ``clustvit data suim ROOT`` | ``clustvit data rumexweeds ROOT``.

``check``: read every image and mask of your own labelled folder (any layout of clustvit/data/folder.py)
or of a config's dataset once: pairs, sizes, pixels and images per class, unlabelled share, every file
training would stop at, and suggestions where the labels look off. Exit status 0 clean, 1 errors found.

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

from clustvit.configs import load_config
from clustvit.data.check import check_config, check_folder
from clustvit.data.folder import LAYOUTS
from clustvit.data.prep_rumexweeds import prepare_rumexweeds
from clustvit.data.prep_suim import convert_suim
from clustvit.data.transforms import IGNORE_INDEX


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    c = sub.add_parser("check", help="check a labelled folder or a config's dataset (exit 1 on errors)",
                       description="Read every image and mask once: pairs, sizes, class histogram, unlabelled "
                                   "share, values outside the classes, suggestions. Exit 1 on errors.")
    c.add_argument("source", metavar="DIR|CONFIG", help="a labelled folder, or a config (file or name)")
    add_folder_args(c)
    c.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    c.set_defaults(func=check)
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


def add_folder_args(p: argparse.ArgumentParser) -> None:
    """How to read a labelled folder (``clustvit.data.folder.Folder``'s arguments; unset: its defaults)."""
    g = p.add_argument_group("labelled folder")
    g.add_argument("--classes", nargs="+", metavar="NAME", help="class names in id order (default: labelmap.txt, "
                   "else classes.txt)")
    g.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto", help="folder layout (default: auto)")
    g.add_argument("--reduce-zero-label", action="store_true", help="mask value 0 = unlabelled, k = class k-1")
    g.add_argument("--ignore-index", type=int, default=IGNORE_INDEX, help="mask value of unlabelled pixels "
                   f"(default {IGNORE_INDEX})")
    g.add_argument("--val-fraction", type=float, default=0.1, help="held out as val when there is no val split")
    g.add_argument("--split-seed", type=int, default=0, help="seed of that hold-out")


def folder_kwargs(args: argparse.Namespace) -> dict:
    """The ``Folder`` arguments of ``add_folder_args``'s flags."""
    return dict(classes=args.classes, layout=args.layout, reduce_zero_label=args.reduce_zero_label,
                ignore_index=args.ignore_index, val_fraction=args.val_fraction, split_seed=args.split_seed)


def check(args: argparse.Namespace) -> int:
    if Path(args.source).is_dir():
        report = check_folder(args.source, **folder_kwargs(args))
    else:
        report = check_config(load_config(args.source, args.cfg_options))
    print(report.render())
    return 0 if report.ok else 1


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
