"""Where does the Cluster module merge? One PNG panel per image plus a purity summary (JSON and a table).

    python tools/clust_analysis.py CONFIG CHECKPOINT [--data-root ROOT --split S | --images PATH...]
        [--oracle-clusters] [--out DIR] [--num N]

Panel: image | Cluster-module assignment (each merged token painted in its cluster's colour, kept tokens
left as they are) | pseudo-label target | prediction. CHECKPOINT ``none`` keeps random weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from clustvit.atomic import write_json_atomic  # noqa: E402
from clustvit.inference.api import dataset_meta  # noqa: E402
from clustvit.loading import load_model, require_checkpoint  # noqa: E402
from clustvit.viz.analysis import analyse, cluster_panel, format_summary, load_inputs, summarize  # noqa: E402
from clustvit.viz.draw import save_png  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="config file, zoo name (python -m clustvit.zoo list) or hub folder")
    parser.add_argument("checkpoint", nargs="?", help="checkpoint (ours or official), or 'none' for random "
                        "weights (optional after a zoo name / hub folder)")
    parser.add_argument("--data-root", help="dataset root (default: the config's data.root); masks give targets and purity")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--images", nargs="+", default=[], help="image files/folders instead of a dataset (no masks)")
    parser.add_argument("--oracle-clusters", action="store_true", help="use the masks' pseudo-labels as cluster ids")
    parser.add_argument("--out", default="work_dirs/clust_analysis")
    parser.add_argument("--num", type=int, default=8, help="at most this many images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.oracle_clusters and args.images:
            raise ValueError("--oracle-clusters needs masks: use --data-root, not --images")
        require_checkpoint(args.config, args.checkpoint)
        seg, cfg = load_model(args.config, args.checkpoint, args.cfg_options, args.device)
        _, palette = dataset_meta(cfg.get("data"), seg.num_classes)
        inputs = load_inputs(cfg, args.data_root, args.split, args.images, args.num)
        views = []
        for image, mask, name in inputs:
            view = analyse(seg, image, mask, args.oracle_clusters)
            save_png(Path(args.out) / f"{name}.png", cluster_panel(view, palette, seg.num_clusters))
            views.append(view)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = summarize(views, seg.num_clusters)
    out = Path(args.out) / "summary.json"
    write_json_atomic(out, summary, indent=1)
    print(format_summary(summary))
    print(f"wrote {len(views)} panel(s) and {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
