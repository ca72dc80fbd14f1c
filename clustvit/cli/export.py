"""``clustvit export``: the whole segmentor as ONNX or OpenVINO IR, ClustViT's data-dependent token merging in the graph.

    clustvit export CONFIG [CHECKPOINT] --out model.onnx [--shape H W] [--verify IMAGE...]
    clustvit export CONFIG [CHECKPOINT] --out model.xml [--int8 --calib DIR [--calib-count N]] [--verify IMAGE...]

Inputs: ``image`` (1, 3, H, W) float RGB 0..255. Outputs: ``logits`` (1, n_cls, H, W), ``tokens`` (1,)
(the sequence length after merging; it varies per image) and, for ClustViT, ``cluster_ids`` (1, N).
``--verify`` runs onnxruntime on real images and prints the max abs logit difference to PyTorch and
the share of pixels whose arg-max agrees. The file carries the class names and palette; run it with
``clustvit predict model.onnx IMAGES --out DIR`` (onnxruntime or OpenVINO, ``clustvit.deploy.runtime``).

``--out model.xml`` writes an OpenVINO IR (model.xml + model.bin) of the same graph, with the same
metadata. ``--int8`` quantises it with NNCF (post-training, OpenVINO), calibrated on your own images
(``--calib DIR``, resized to the graph's input as at inference; ``--calib-count`` of them, spread over the
folder): the transformer blocks and the head in int8, ClustViT's Cluster module, merge and Regenerator in
float (``clustvit.deploy.quantize``). Run it with ``clustvit predict model.xml IMAGES --out DIR`` (OpenVINO).
``--verify`` then compares the IR (OpenVINO, float32 precision hint) to PyTorch.
Exit status: 0 exported (and verified); 2 bad config, checkpoint, shape, image, calibration folder, or a
missing nncf / openvino (one line).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from clustvit.data.base import read_image
from clustvit.deploy import quantize
from clustvit.deploy.export import default_shape, export_onnx, metadata, verify
from clustvit.inference.api import dataset_meta
from clustvit.inference.predict import collect_images
from clustvit.loading import load_model


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("config", help="config file or name, zoo name (clustvit zoo list) or hub folder")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="checkpoint (ours or official); default: a zoo name's / hub folder's own, else random")
    p.add_argument("--out", required=True, help="the .onnx file, or OpenVINO IR .xml file (and its .bin), to write")
    p.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), help="input size (default: test size)")
    p.add_argument("--verify", nargs="+", default=[], metavar="IMAGE", help="images/folders to check on")
    p.add_argument("--int8", action="store_true", help="int8 OpenVINO IR (NNCF; needs --out .xml and --calib)")
    p.add_argument("--calib", metavar="DIR", help="folder of your own images to calibrate --int8 on")
    p.add_argument("--calib-count", type=int, default=quantize.DEFAULT_CALIB_COUNT, metavar="N",
                   help=f"calibration images used, spread over --calib (default {quantize.DEFAULT_CALIB_COUNT})")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export (and verify); a bad input raises ValueError / FileNotFoundError before anything is printed."""
    ir = args.out.endswith(".xml")
    if not ir and not args.out.endswith(".onnx"):
        raise ValueError(f"--out {args.out}: expected a .onnx file or an OpenVINO IR .xml file")
    if args.int8 and not ir:
        raise ValueError(f"--int8 --out {args.out}: int8 is written as OpenVINO IR, expected --out ending in .xml")
    if args.int8 and not args.calib:
        raise ValueError("--int8: expected --calib DIR, a folder of your own images to calibrate on")
    if args.calib and not args.int8:
        raise ValueError("--calib: calibrates --int8, which was not given")
    calib_files = collect_images([args.calib]) if args.int8 else []  # before the slow export: fail early
    if args.int8 and args.calib_count < 1:
        raise ValueError(f"--calib-count {args.calib_count}: expected at least 1 image")
    # Every optional runtime the export will need, checked before the slow model load (one line each).
    for module, needed, what in (("onnx", True, "export"), ("onnxscript", True, "export"),
                                 ("openvino", ir, "--out .xml"), ("nncf", args.int8, "--int8"),
                                 ("onnxruntime", bool(args.verify) and not ir, "--verify")):
        if needed:
            quantize.require(module, what)
    seg, cfg = load_model(args.config, args.checkpoint, args.cfg_options)
    shape = tuple(args.shape) if args.shape else default_shape(cfg, seg)
    if any(s <= 0 for s in shape):
        raise ValueError(f"--shape {shape}: expected positive H W")
    t0 = time.perf_counter()
    classes, palette = dataset_meta(cfg.get("data"), seg.num_classes)
    source = f"{args.config}" + (f" {args.checkpoint}" if args.checkpoint else "")
    meta = metadata(classes, palette, source + (" int8" if args.int8 else ""))
    with tempfile.TemporaryDirectory(prefix="clustvit_export_") as tmp:
        onnx_path = export_onnx(seg, Path(tmp) / "model.onnx" if ir else args.out, shape, meta=meta)
        if args.int8:
            calib = quantize.calibration_inputs(calib_files, shape, args.calib_count)
            path, kept = quantize.quantize_ir(onnx_path, args.out, calib, meta)
            print(f"int8: calibrated on {len(calib)} image(s) from {args.calib}; {len(kept)} op(s) of the "
                  f"merge path kept in float")
        elif ir:
            path = quantize.write_ir(onnx_path, args.out, meta)
        else:
            path = onnx_path
    print(f"exported {path} (input 1x3x{shape[0]}x{shape[1]}) in {time.perf_counter() - t0:.1f} s")
    if not args.verify:
        return 0
    files = collect_images(args.verify)
    results = verify(path, seg, [read_image(f) for f in files], shape, quantize.openvino_runner(path) if ir else None)
    print(f"{'image':<28} {'max|diff|':>10} {'agree':>8} {'tokens onnx/torch':>18} {'same ids':>9}")
    for f, r in zip(files, results):
        print(f"{f.name:<28} {r['max_abs_diff']:10.2e} {100 * r['agreement']:7.3f}% "
              f"{r['tokens_onnx']:>9}/{r['tokens_torch']:<8} {100 * r.get('ids_agreement', 1.0):8.2f}%")
    worst = max(r["max_abs_diff"] for r in results)
    agree = min(r["agreement"] for r in results)
    print(f"max abs logit diff {worst:.2e}, min pixel arg-max agreement {100 * agree:.3f}%")
    ties = sum(r["disagree_pixels"] - r["disagree_not_tie"] for r in results)
    if ties:
        print(f"{ties} differing pixel(s) are float near-ties (PyTorch top-2 margin <= 2 x max|diff|); "
              f"{sum(r['disagree_not_tie'] for r in results)} are not")
    return 0
