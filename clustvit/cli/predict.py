"""``clustvit predict``: label PNGs for images, label videos for videos, cameras and streams; with overlays.

    clustvit predict CONFIG CHECKPOINT INPUT... --out DIR [--overlay] [--amp] [--skip-existing]
    clustvit predict MODEL.onnx INPUT... --out DIR [--backend openvino|onnxruntime] [--amp]
    torchrun --nproc_per_node N -m clustvit predict CONFIG CHECKPOINT INPUT... --out DIR   (N processes)

CONFIG is a config file or name, a zoo name or a hub folder. CHECKPOINT ``none`` keeps random weights
(to try the command without one). An exported graph (``clustvit export``) runs on a CPU runtime instead
of PyTorch (``clustvit.deploy.runtime``; ``--amp``: OpenVINO's bfloat16), at the fixed size it was
exported at. An INPUT is an image, a video file (.mp4, .avi, .mkv, .mov, ...), a folder (its images and
videos), a camera (a bare integer such as ``0``, unless a file of that name exists, or ``/dev/video0``)
or a stream URL (``rtsp://...``, ``http(s)://...``).

For every image ``name.jpg`` it writes ``DIR/name.png``: the class index of every pixel (8-bit grey, at
the input's resolution, upright as viewers show it: an EXIF orientation is applied); with ``--overlay``
also ``DIR/name_overlay.png``: the palette colours blended over the image.

For every video or stream ``name`` it writes ``DIR/name.mkv``: the class ids as an 8-bit grey FFV1 video
(lossless: ids decode bit-exact with OpenCV or FFmpeg), one frame per predicted frame, at the source's
frame rate divided by ``--every`` (30 fps where a stream reports none), so that it lasts as long as the
source; ``DIR/name.frames.json``: the source frame index of every label frame; with ``--overlay``
``DIR/name_overlay.mp4`` (MPEG-4, lossy, for viewing). Cameras are named ``camera0``, URLs
``stream_HOST_PATH``. ``--every N`` predicts source frames 0, N, 2N, ...; ``--max-frames M`` reads source
frames 0..M-1 only; ``--latest`` (cameras and URLs) reads in a thread that keeps only the newest frame,
so a slow model never lags behind the camera (the frames it skipped are counted as dropped). An
unreadable frame is skipped and counted in the summary; Ctrl-C ends a live source and keeps its video.

A file that cannot be read is reported in one line and skipped; the others are still written, and the
summary counts both. Outputs are written atomically, so ``--skip-existing`` resumes a folder that an
earlier run left half done (stopped, killed, a full disk) without redoing the finished inputs.

Under torchrun (any number of nodes and processes) every process takes a disjoint share of the inputs
sorted by name (the same share on a rerun: ``--skip-existing`` resumes it), writes only its own outputs
and process 0 prints one summary of all of them (gathered over a gloo group on torchrun's rendezvous).
Exit status: 0 every input written; 1 some inputs failed; 2 bad arguments, config or checkpoint, or an
output that cannot be written (full disk: free space, then rerun with --skip-existing); 130 a live
source stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

import torch

from clustvit.atomic import WriteError
from clustvit.deploy.runtime import BACKENDS, ExportedPredictor
from clustvit.engine import distributed
from clustvit.inference.api import load
from clustvit.inference.predict import collect_inputs, predict_inputs
from clustvit.inference.runtime import tune_malloc

# How long process 0 waits for the slowest process's share at the summary: shares are equal in count, not
# in time (a long video). A crashed process does not leave the others waiting: torchrun stops them all.
GATHER_TIMEOUT = timedelta(days=7)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.usage = ("%(prog)s CONFIG CHECKPOINT INPUT... --out DIR [options]\n"
               "       %(prog)s MODEL.onnx INPUT... --out DIR [options]")
    p.add_argument("config", help="config file or name, zoo name or hub folder; or an exported MODEL.onnx")
    p.add_argument("inputs", nargs="+", metavar="ARG",
                   help="checkpoint (ours or official, or 'none' for random weights; not for MODEL.onnx), "
                        "then images, videos, folders, camera indices (0) or stream URLs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overlay", action="store_true",
                   help="also write NAME_overlay.png / NAME_overlay.mp4 (colours over the image or video)")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave inputs whose outputs are already in --out (resume a half-done folder)")
    p.add_argument("--every", type=_positive, default=1, metavar="N",
                   help="videos: predict source frames 0, N, 2N, ... (label video at the source rate / N)")
    p.add_argument("--max-frames", type=_positive, metavar="M", help="videos: read source frames 0..M-1 only")
    p.add_argument("--latest", action="store_true",
                   help="cameras and URLs: drop the frames the model has no time for (always the newest)")
    p.add_argument("--amp", action="store_true", help="mixed precision in clustvit.accel.amp_dtype: bfloat16 (float16 only on GPUs without bfloat16)")
    p.add_argument("--no-accel", action="store_true", help="the plain model, without clustvit.accel's kernels")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda under torchrun means each process's cuda:LOCAL_RANK")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--backend", choices=BACKENDS, help="runtime for MODEL.onnx (default: openvino if installed)")
    p.set_defaults(func=run, parser=p)


def summary(totals: list[dict[str, int]], out: str, overlay: bool, runtime: str) -> str:
    """One line over every process's ``Outcome.totals()``."""
    total = {k: sum(t[k] for t in totals) for k in totals[0]}
    what = f"{total['images']} label PNG(s)"
    if total["videos"]:
        what += f" and {total['videos']} label video(s) ({total['frames']} frames)"
    parts = [f"wrote {what}{' and overlays' if overlay else ''} to {out}{runtime}"]
    if len(totals) > 1:
        parts[0] += f" by {len(totals)} processes ({' + '.join(str(t['images'] + t['videos']) for t in totals)})"
    if total["skipped"]:
        parts.append(f"{total['skipped']} skipped (already there)")
    if total["failed"]:
        parts.append(f"{total['failed']} failed (listed above)")
    if total["unreadable"]:
        parts.append(f"{total['unreadable']} unreadable frame(s) skipped")
    if total["dropped"]:
        parts.append(f"{total['dropped']} frame(s) dropped (--latest)")
    if total["interrupted"]:
        parts.append("stopped by Ctrl-C")
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Predict every input (this process's share under torchrun); the exit status is the module docstring's."""
    exported = args.config.endswith((".onnx", ".xml"))  # an ONNX graph or an OpenVINO IR (clustvit export)
    if not exported and len(args.inputs) < 2:
        args.parser.error("expected CONFIG CHECKPOINT INPUT... (a checkpoint or 'none', then images or videos)")
    if exported and args.cfg_options:
        args.parser.error("--cfg-options: an exported graph has no config to override")
    checkpoint, inputs = (None, args.inputs) if exported else (args.inputs[0], args.inputs[1:])
    rank, world, local_rank = distributed.env_ranks()
    device = f"cuda:{local_rank}" if args.device == "cuda" and world > 1 else args.device
    tune_malloc()  # reuse freed activations instead of page-faulting fresh memory (clustvit/inference/runtime.py)
    items = collect_inputs(inputs)  # every process fails alike on a bad input, before the rendezvous
    # Only the summary needs the other processes: gloo, whatever the device, over torchrun's rendezvous.
    distributed.init_cpu_group(GATHER_TIMEOUT)
    fatal = None
    try:
        if exported:
            predictor = ExportedPredictor(args.config, args.backend, bf16=args.amp)
        else:
            predictor = load(args.config, checkpoint, device, args.amp, args.cfg_options, accel=not args.no_accel)
        done = predict_inputs(predictor, items, Path(args.out), args.overlay, args.skip_existing, args.every,
                              args.max_frames, args.latest, rank, world)
        totals = done.totals()
    except WriteError as e:  # not a ValueError: the dispatcher would let it through as a traceback
        fatal = f"error: {e}; free space or choose another --out, then rerun with --skip-existing"
        totals = None
    except (ValueError, FileNotFoundError) as e:  # a bad model or checkpoint: every process says it alike
        fatal, totals = f"error: {e}", None
    try:
        gathered = distributed.all_gather_objects((totals, fatal))  # every process: the same exit status
    finally:
        distributed.teardown()  # exiting with the gloo group alive can abort the process
    errors = list(dict.fromkeys(f for _, f in gathered if f))  # the same bad model: one line, not one per process
    if rank == 0:
        for line in errors:
            print(line, file=sys.stderr)
    if errors:
        return 2
    runtime = f" ({predictor.backend}{', bf16' if predictor.bf16 else ''})" if exported else ""
    all_totals = [t for t, _ in gathered]
    if rank == 0:
        print(summary(all_totals, args.out, args.overlay, runtime))
    if any(t["interrupted"] for t in all_totals):
        return 130
    return 1 if any(t["failed"] for t in all_totals) else 0
