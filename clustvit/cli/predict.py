"""``clustvit predict``: label PNGs (and coloured overlays) for your own images, with a progress bar.

    clustvit predict CONFIG CHECKPOINT IMAGE_OR_DIR... --out DIR [--overlay] [--amp] [--skip-existing]
    clustvit predict MODEL.onnx IMAGE_OR_DIR... --out DIR [--backend openvino|onnxruntime] [--amp]

CONFIG is a config file or name, a zoo name or a hub folder. CHECKPOINT ``none`` keeps random weights
(to try the command without one). An exported graph (``clustvit export``) runs on a CPU runtime instead
of PyTorch (``clustvit.deploy.runtime``; ``--amp``: OpenVINO's bfloat16), at the fixed size it was
exported at. For every input image ``name.jpg`` it writes ``DIR/name.png``: the class index of every
pixel (8-bit grey, at the input's resolution, upright as viewers show it: an EXIF orientation is
applied); with ``--overlay`` also ``DIR/name_overlay.png``: the palette colours blended over the image.

A file that cannot be read is reported in one line and skipped; the others are still written, and the
summary counts both. Outputs are written atomically, so ``--skip-existing`` resumes a folder that an
earlier run left half done (stopped, killed, a full disk) without redoing the finished images.
Exit status: 0 every image written; 1 some inputs failed; 2 bad arguments, config or checkpoint, or an
output that cannot be written (full disk: free space, then rerun with --skip-existing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from clustvit.atomic import WriteError
from clustvit.deploy.runtime import BACKENDS, ExportedPredictor
from clustvit.inference.api import load
from clustvit.inference.predict import collect_images, predict_files
from clustvit.inference.runtime import tune_malloc


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.usage = ("%(prog)s CONFIG CHECKPOINT IMAGE_OR_DIR... --out DIR [options]\n"
               "       %(prog)s MODEL.onnx IMAGE_OR_DIR... --out DIR [options]")
    p.add_argument("config", help="config file or name, zoo name or hub folder; or an exported MODEL.onnx")
    p.add_argument("inputs", nargs="+", metavar="ARG",
                   help="checkpoint (ours or official, or 'none' for random weights; not for MODEL.onnx), "
                        "then image files and/or folders of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overlay", action="store_true", help="also write NAME_overlay.png (colours over the image)")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave inputs whose outputs are already in --out (resume a half-done folder)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, float16 on CUDA)")
    p.add_argument("--no-accel", action="store_true", help="the plain model, without clustvit.accel's kernels")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--backend", choices=BACKENDS, help="runtime for MODEL.onnx (default: openvino if installed)")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    """Predict every input; the exit status is the module docstring's."""
    exported = args.config.endswith(".onnx")
    if not exported and len(args.inputs) < 2:
        args.parser.error("expected CONFIG CHECKPOINT IMAGE_OR_DIR... (a checkpoint or 'none', then images)")
    if exported and args.cfg_options:
        args.parser.error("--cfg-options: an exported graph has no config to override")
    checkpoint, inputs = (None, args.inputs) if exported else (args.inputs[0], args.inputs[1:])
    tune_malloc()  # reuse freed activations instead of page-faulting fresh memory (clustvit/inference/runtime.py)
    try:
        files = collect_images(inputs)
        if exported:
            predictor = ExportedPredictor(args.config, args.backend, bf16=args.amp)
        else:
            predictor = load(args.config, checkpoint, args.device, args.amp, args.cfg_options, accel=not args.no_accel)
        done = predict_files(predictor, files, Path(args.out), args.overlay, args.skip_existing)
    except WriteError as e:  # not a ValueError: the dispatcher would let it through as a traceback
        print(f"error: {e}; free space or choose another --out, then rerun with --skip-existing", file=sys.stderr)
        return 2
    runtime = f" ({predictor.backend}{', bf16' if predictor.bf16 else ''})" if exported else ""
    parts = [f"wrote {len(done.written)} label PNG(s){' and overlays' if args.overlay else ''} to {args.out}{runtime}"]
    if done.skipped:
        parts.append(f"{len(done.skipped)} skipped (already there)")
    if done.failed:
        parts.append(f"{len(done.failed)} failed (listed above)")
    print("; ".join(parts))
    return 1 if done.failed else 0
