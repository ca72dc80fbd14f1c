"""Label your own images and videos: find the inputs, predict each, write label PNGs, videos and overlays.

The logic behind ``clustvit predict`` (clustvit/cli/predict.py holds its arguments and exit codes). For every input image ``name.jpg``
:func:`predict_files` writes ``DIR/name.png``: the class index of every pixel (8-bit grey, at the
input's resolution, upright as viewers show it: an EXIF orientation is applied); with an overlay also
``DIR/name_overlay.png``: the palette colours blended over the image. Videos, cameras and stream URLs
become label videos (:mod:`clustvit.inference.stream`). A file that cannot be read is reported in one
line and skipped; outputs are written atomically, so ``skip_existing`` resumes a folder that an earlier
run left half done.

Several processes (``torchrun``) share the inputs with :func:`shard`: rank r of w takes every w-th input
of the inputs sorted by name, starting at the r-th, so that a rerun gives every rank the same inputs and
no output is written by two ranks; output names are decided over all inputs (:func:`output_stems`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clustvit.data.base import read_image
from clustvit.deploy.runtime import ExportedPredictor
from clustvit.inference.predictor import Predictor
from clustvit.inference.stream import (
    LABEL_SUFFIX,
    OVERLAY_SUFFIX,
    VIDEO_SUFFIXES,
    VideoResult,
    is_live,
    is_video_file,
    open_source,
    source_stem,
    write_label_video,
)
from clustvit.viz.draw import overlay, save_png

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Outcome:
    """What `predict_files` / `predict_inputs` did: label PNGs written, label videos written, inputs skipped
    (outputs there), inputs failed."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path | str] = field(default_factory=list)
    failed: list[tuple[Path | str, str]] = field(default_factory=list)  # (input, one-line reason)
    videos: list[VideoResult] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        """The counts a summary line gives (what ranks gather: small, whatever the number of files)."""
        return {"images": len(self.written), "videos": len(self.videos), "skipped": len(self.skipped),
                "failed": len(self.failed), "frames": sum(v.frames for v in self.videos),
                "unreadable": sum(len(v.unreadable) for v in self.videos),
                "dropped": sum(v.dropped for v in self.videos),
                "interrupted": sum(v.interrupted for v in self.videos)}


def folder_files(folder: Path, suffixes: Sequence[str], what: str) -> list[Path]:
    """The files of ``folder`` with one of ``suffixes`` (any case), sorted, not recursive; none is an error."""
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not found:
        raise FileNotFoundError(f"{folder}: no {what} in this folder")
    return found


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path | str]:
    """Image and video files as given, folders expanded to their image and video files (sorted, not
    recursive), live sources (camera index, ``/dev/video*``, URL) as the strings given. A bare integer is
    a camera unless a file of that name exists."""
    out: list[Path | str] = []
    for item in inputs:
        path = Path(item)
        if is_live(item) and not path.is_file():
            out.append(str(item))
        elif path.is_dir():
            out += folder_files(path, IMAGE_SUFFIXES + VIDEO_SUFFIXES, "image or video files")
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image or video file, folder, camera index or stream URL")
    return out


def shard(inputs: Sequence[Path | str], rank: int, world: int) -> list[int]:
    """Positions in `inputs` of rank `rank`'s share of `world`: every world-th of the inputs sorted by name.

    Disjoint across ranks, together all of them, and the same on a rerun with the same inputs.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world} processes")
    by_name = sorted(range(len(inputs)), key=lambda k: (str(inputs[k]), k))
    return sorted(by_name[rank::world])


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, not recursive)."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += folder_files(item, IMAGE_SUFFIXES, f"image files ({'/'.join(IMAGE_SUFFIXES)})")
        elif item.is_file():
            out.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image file or folder")
    return out


def output_stems(files: Sequence[Path | str]) -> list[str]:
    """The output name of each input: its stem, or ``stem_suffix`` for a second input with that stem
    (a.jpg, a.png would overwrite each other); ``camera0``, ``stream_HOST_PATH`` for live sources.
    Depends only on the list, so a rerun finds the same names."""
    stems: list[str] = []
    seen: set[str] = set()
    for item in files:
        base = source_stem(item) if isinstance(item, str) else item.stem
        stem, n = base, 1
        if stem in seen:  # a.jpg then a.png: a_png; a third a.png (another folder): a_png_2 ...
            stem = f"{base}_{Path(item).suffix.lstrip('.') or 'input'}"
            while stem in seen:
                n += 1
                stem = f"{base}_{Path(item).suffix.lstrip('.') or 'input'}_{n}"
        seen.add(stem)
        stems.append(stem)
    return stems


def predict_files(predictor: Predictor | ExportedPredictor, files: Sequence[Path], out_dir: Path,
                  with_overlay: bool = False, skip_existing: bool = False,
                  stems: Sequence[str] | None = None, outcome: Outcome | None = None) -> Outcome:
    """Predict every file and write its label PNG (and overlay), going on past unreadable inputs.

    Each failed input is printed as one ``error:`` line on stderr as it happens and listed in the result.
    ``stems``: the output names (default :func:`output_stems` of `files`); ``outcome``: one to add to.

    Raises:
        ValueError: the model has more classes than an 8-bit PNG holds.
        clustvit.atomic.WriteError: an output cannot be written (every later one would fail the same way).
    """
    if len(predictor.classes) > 256:
        raise ValueError(f"{len(predictor.classes)} classes do not fit an 8-bit label PNG")
    outcome = Outcome() if outcome is None else outcome
    stems = output_stems(files) if stems is None else stems
    bar = tqdm(list(zip(files, stems)), desc="predict", unit="img", file=sys.stderr, disable=not files)
    for path, stem in bar:
        label, over = out_dir / f"{stem}.png", out_dir / f"{stem}_overlay.png"
        if skip_existing and label.is_file() and (over.is_file() or not with_overlay):
            outcome.skipped.append(path)
            continue
        try:
            rgb = read_image(path)
        except ValueError as e:
            outcome.failed.append((path, str(e)))
            tqdm.write(f"error: {e}", file=sys.stderr)
            continue
        mask = predictor.predict(rgb)  # (H, W) int64
        # The overlay first: the label PNG is what --skip-existing looks for, so it must come last.
        if with_overlay:
            save_png(over, overlay(rgb, mask, predictor.palette))
        outcome.written.append(save_png(label, mask.astype(np.uint8)))
    return outcome


def predict_video(predictor: Predictor | ExportedPredictor, source: Path | str, stem: str, out_dir: Path,
                  outcome: Outcome, with_overlay: bool = False, skip_existing: bool = False, every: int = 1,
                  max_frames: int | None = None, use_latest: bool = False) -> None:
    """One video file or live source into label video ``out_dir/STEM.mkv`` (:func:`stream.write_label_video`),
    recorded in `outcome`; an unreadable source is one ``error:`` line and a failed input."""
    label, over = out_dir / f"{stem}{LABEL_SUFFIX}", out_dir / f"{stem}_overlay{OVERLAY_SUFFIX}"
    if skip_existing and not is_live(source) and label.is_file() and (over.is_file() or not with_overlay):
        outcome.skipped.append(source)
        return
    try:
        opened = open_source(source)
        try:
            result = write_label_video(predictor, opened, out_dir, stem, with_overlay, every, max_frames,
                                       use_latest and opened.live)  # a file never runs ahead of the model
        finally:
            opened.close()
    except ValueError as e:
        outcome.failed.append((source, str(e)))
        tqdm.write(f"error: {e}", file=sys.stderr)
        return
    if result.unreadable:
        shown = ", ".join(map(str, result.unreadable[:10])) + (", ..." if len(result.unreadable) > 10 else "")
        tqdm.write(f"warning: {source}: {len(result.unreadable)} unreadable frame(s) skipped: {shown}",
                   file=sys.stderr)
    outcome.videos.append(result)


def predict_inputs(predictor: Predictor | ExportedPredictor, inputs: Sequence[Path | str], out_dir: Path,
                   with_overlay: bool = False, skip_existing: bool = False, every: int = 1,
                   max_frames: int | None = None, use_latest: bool = False, rank: int = 0,
                   world: int = 1) -> Outcome:
    """Images to label PNGs, videos and live sources to label videos: rank `rank`'s :func:`shard` of them.

    Output names are decided over all `inputs`, so every rank names its share as a single process would.
    Raises what :func:`predict_files` raises.
    """
    stems = output_stems(inputs)
    mine = shard(inputs, rank, world)
    images = [k for k in mine if isinstance(inputs[k], Path) and not is_video_file(inputs[k])]
    outcome = predict_files(predictor, [inputs[k] for k in images], out_dir, with_overlay, skip_existing,
                            [stems[k] for k in images])
    image_set = set(images)  # a list's `in` would make this loop quadratic over a season of images
    for k in mine:
        if k not in image_set:
            predict_video(predictor, inputs[k], stems[k], out_dir, outcome, with_overlay, skip_existing, every,
                          max_frames, use_latest)
            if outcome.videos and outcome.videos[-1].interrupted:  # Ctrl-C ended a camera: it ends the run
                break
    return outcome
