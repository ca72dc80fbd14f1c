"""``clustvit analyse clusters|features``: where the Cluster module merges, and what the tokens hold.

    clustvit analyse clusters CONFIG CHECKPOINT [--data-root ROOT --split S | --images PATH...]
        [--oracle-clusters] [--out DIR] [--num N]
    clustvit analyse features CONFIG CHECKPOINT IMAGE [--layers I ...] [--out DIR]

``clusters``: one PNG panel per image: image | Cluster-module assignment (each merged token painted in
its cluster's colour, kept tokens left as they are) | pseudo-label target | prediction; plus a purity
summary (``DIR/summary.json`` and a table). ``features``: token features of chosen blocks as PCA-to-RGB
maps, before merging, after merging and after regeneration, in one grid PNG (``DIR/IMAGE_features.png``,
from ``ClustViT.forward_intermediates``). CHECKPOINT ``none`` keeps random weights.
Exit status: 0 written; 2 bad config, checkpoint, data or option (one line).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clustvit.atomic import write_json_atomic
from clustvit.inference.api import dataset_meta
from clustvit.loading import load_model, require_checkpoint
from clustvit.viz.analysis import analyse, cluster_panel, feature_grid, format_summary, load_inputs, summarize
from clustvit.viz.draw import save_png

MODEL_HELP = "config file or name, zoo name (clustvit zoo list) or hub folder"


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="analyse_command", metavar="SUBCOMMAND")
    c = sub.add_parser("clusters", help="Cluster-module assignment panels and a purity summary",
                       description="One PNG panel per image: image | Cluster-module assignment | pseudo-label "
                                   "target | prediction; a purity summary in DIR/summary.json and a table.")
    c.add_argument("config", help=MODEL_HELP)
    c.add_argument("checkpoint", nargs="?", help="checkpoint (ours or official), or 'none' for random "
                   "weights (optional after a zoo name / hub folder)")
    c.add_argument("--data-root", help="dataset root (default: the config's data.root); masks give targets and purity")
    c.add_argument("--split", default="val", choices=("train", "val", "test"))
    c.add_argument("--images", nargs="+", default=[], help="image files/folders instead of a dataset (no masks)")
    c.add_argument("--oracle-clusters", action="store_true", help="use the masks' pseudo-labels as cluster ids")
    c.add_argument("--out", default="work_dirs/clust_analysis", help="output folder")
    c.add_argument("--num", type=int, default=8, help="at most this many images")
    c.add_argument("--device", default="cpu")
    c.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    c.set_defaults(func=clusters)
    f = sub.add_parser("features", help="PCA-to-RGB token feature maps of chosen blocks",
                       description="Token features of chosen blocks as PCA-to-RGB maps: before merging, after "
                                   "merging, after regeneration; one grid PNG (DIR/IMAGE_features.png).")
    f.add_argument("config", help=MODEL_HELP)
    f.add_argument("checkpoint", help="checkpoint (ours or official), or 'none' for random weights; "
                   "after a zoo name / hub folder: the image (its own weights are used)")
    f.add_argument("image", nargs="?", help="an image file (resized as the config's test pipeline does)")
    f.add_argument("--layers", type=int, nargs="+", help="block indices (default: ip-1, ip, last)")
    f.add_argument("--out", default="work_dirs/features", help="output folder")
    f.add_argument("--device", default="cpu")
    f.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    f.set_defaults(func=features)


def clusters(args: argparse.Namespace) -> int:
    """Panels and summary; a bad input raises ValueError / FileNotFoundError (no summary written)."""
    if args.oracle_clusters and args.images:
        raise ValueError("--oracle-clusters needs masks: use --data-root, not --images")
    require_checkpoint(args.config, args.checkpoint)
    seg, cfg = load_model(args.config, args.checkpoint, args.cfg_options, args.device)
    _, palette = dataset_meta(cfg.get("data"), seg.num_classes)
    views = []
    for image, mask, name in load_inputs(cfg, args.data_root, args.split, args.images, args.num):
        view = analyse(seg, image, mask, args.oracle_clusters)
        save_png(Path(args.out) / f"{name}.png", cluster_panel(view, palette, seg.num_clusters))
        views.append(view)
    summary = summarize(views, seg.num_clusters)
    out = Path(args.out) / "summary.json"
    write_json_atomic(out, summary, indent=1)
    print(format_summary(summary))
    print(f"wrote {len(views)} panel(s) and {out}")
    return 0


def features(args: argparse.Namespace) -> int:
    """One feature grid PNG; a bad input raises ValueError / FileNotFoundError."""
    checkpoint, image = args.checkpoint, args.image
    if image is None:  # NAME IMAGE: a zoo name or hub folder brings its weights
        checkpoint, image = None, args.checkpoint
        require_checkpoint(args.config, None)
    seg, cfg = load_model(args.config, checkpoint, args.cfg_options, args.device)
    (tensor, _, name), = load_inputs(cfg, images=[image], num=1)
    path = save_png(Path(args.out) / f"{name}_features.png", feature_grid(seg, tensor, args.layers))
    print(f"wrote {path}")
    return 0
