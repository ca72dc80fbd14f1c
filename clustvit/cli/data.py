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

``plan``: the merge forecast before a long training run. The masks' pseudo-labels stand for a well-trained
Cluster module (oracle clusters): for k = 1..5 and every injection point, tokens kept, GFLOPs against the
ViT of the same size, the FLOP ratio and the speed-up it implies (an expectation, not a measurement), and
a recommendation (clustvit/bench/forecast.py). Images go through the test pipeline (a folder: resized to
SIZE x SIZE, aspect ratio not kept); the val split by default, the images the model is scored on.
Writes plan.json and plan.png (tokens kept per image) to --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from clustvit.atomic import write_json_atomic
from clustvit.bench import common as bench
from clustvit.bench import forecast
from clustvit.bench.report import text_table
from clustvit.configs import load_config
from clustvit.configs.own_data import resolve_model
from clustvit.data.build import build_dataset
from clustvit.data.check import check_config, check_folder
from clustvit.data.folder import LAYOUTS
from clustvit.data.prep_rumexweeds import prepare_rumexweeds
from clustvit.data.prep_suim import convert_suim
from clustvit.data.transforms import IGNORE_INDEX
from clustvit.inference.runtime import tune_malloc


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
    pl = sub.add_parser("plan", help="forecast what merging saves on your images (k=1..5, every ip)",
                        description="The merge forecast: tokens kept, GFLOPs against the ViT, the expected "
                                    "speed-up for k=1..5 and every injection point, with the masks' pseudo-labels "
                                    "as a well-trained Cluster module's clusters; and a recommendation.")
    pl.add_argument("source", metavar="DIR|CONFIG", help="a labelled folder, or a config (file or name) naming "
                    "the dataset")
    pl.add_argument("--model", help="a short form as `clustvit train --model` takes it (clustvit-b, clustvit-s_k3_ip4 "
                    "...), a ClustViT config or zoo name (default: CONFIG's own ClustViT, else clustvit-b); its class "
                    "count becomes the data's")
    pl.add_argument("--size", type=int, help="resize images to SIZE x SIZE (default: 512 for a folder, the "
                    "config's test pipeline for a config)")
    pl.add_argument("--split", choices=("val", "test"), default="val", help="the split to forecast on (default "
                    "val: the images the model is scored on, through the test pipeline)")
    pl.add_argument("--max-images", type=int, metavar="N", help="the first N images of the split (default all)")
    pl.add_argument("--out", type=Path, help="where plan.json and plan.png go (default work_dirs/plan_<name>)")
    add_folder_args(pl)
    pl.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                    help="overrides of the config and of the model's config")
    pl.set_defaults(func=plan)
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


def plan(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    tune_malloc()  # every count allocates and frees the same large activations: no page-fault storms
    if Path(args.source).is_dir():
        size, source_cfg = args.size or 512, None
        data_cfg = dict(type="Folder", root=str(args.source), dataset_kwargs=folder_kwargs(args),
                        test_pipeline=dict(scale=(size, size), keep_ratio=False))
    else:
        source_cfg = load_config(args.source, args.cfg_options)
        data_cfg = dict(source_cfg["data"])
        if args.size:
            data_cfg["test_pipeline"] = dict(scale=(args.size, args.size), keep_ratio=False)
    dataset = build_dataset(data_cfg, args.split)
    if source_cfg is not None and args.model is None and source_cfg["model"]["backbone"].get("type") == "ClustViT":
        model_name, model_cfg = str(args.source), source_cfg["model"]
    else:
        model_name = args.model or "clustvit-b"  # the short forms of `clustvit train --model`, a config, a zoo name
        path, overrides = resolve_model(model_name)
        model_cfg = dict(load_config(path, [*overrides, *args.cfg_options])["model"],
                         num_classes=len(dataset.classes) if source_cfg is None else source_cfg["model"]["num_classes"])
    samples = bench.load_samples({"data": data_cfg}, None, args.split, args.max_images)
    result = forecast.forecast(model_cfg, samples, progress=lambda line: print(line, file=sys.stderr))

    name = Path(args.source).name if source_cfg is None else Path(args.source).stem
    out = args.out or Path("work_dirs") / f"plan_{name}"
    pipeline = data_cfg.get("test_pipeline", {})
    print(f"merge forecast: {Path(model_name).stem} with oracle clusters on {result.num_images} of {len(dataset)} "
          f"{args.split} images of {args.source} (test pipeline {pipeline})")
    print(f"ViT of the same size: {result.full_tokens:.0f} tokens, {result.vit_gflops_mean:.2f} ± "
          f"{result.vit_gflops_std:.2f} GFLOPs; tokens kept depend on k only; ip {result.counted_ip} counted, "
          f"the others derived from the block cost")
    print(text_table(*forecast.table_rows(result)))
    for line in result.recommendation:
        print(line)
    write_json_atomic(out / "plan.json", {"source": str(args.source), "model": model_name, "split": args.split,
                                          "test_pipeline": pipeline, "images_in_split": len(dataset),
                                          **result.to_dict()})
    forecast.plot(result, out / "plan.png", f"{name}: tokens kept, {result.num_images} images")
    print(f"wrote {out / 'plan.json'} and {out / 'plan.png'} ({time.perf_counter() - start:.0f} s)")
    return 0


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
