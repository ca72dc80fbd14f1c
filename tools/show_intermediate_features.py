"""Token features of chosen blocks as PCA-to-RGB maps: before merging, after merging, after regeneration.

    python tools/show_intermediate_features.py CONFIG CHECKPOINT IMAGE [--layers I ...] [--out DIR]

One grid PNG (``DIR/IMAGE_features.png``) from the model's own intermediate outputs
(``ClustViT.forward(return_intermediates=True)``). CHECKPOINT ``none`` keeps random weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from clustvit.loading import load_model, require_checkpoint  # noqa: E402
from clustvit.viz.analysis import feature_grid, load_inputs  # noqa: E402
from clustvit.viz.draw import save_png  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="config file, zoo name (python -m clustvit.zoo list) or hub folder")
    parser.add_argument("checkpoint", help="checkpoint (ours or official), or 'none' for random weights; "
                        "after a zoo name / hub folder: the image (its own weights are used)")
    parser.add_argument("image", nargs="?", help="an image file (resized as the config's test pipeline does)")
    parser.add_argument("--layers", type=int, nargs="+", help="block indices (default: ip-1, ip, last)")
    parser.add_argument("--out", default="work_dirs/features")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.image is None:  # NAME IMAGE: a zoo name or hub folder brings its weights
            args.checkpoint, args.image = None, args.checkpoint
            require_checkpoint(args.config, None)
        seg, cfg = load_model(args.config, args.checkpoint, args.cfg_options, args.device)
        (image, _, name), = load_inputs(cfg, images=[args.image], num=1)
        path = save_png(Path(args.out) / f"{name}_features.png", feature_grid(seg, image, args.layers))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
