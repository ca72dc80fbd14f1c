"""Label video files, cameras and stream URLs frame by frame; the robot's loop and ``clustvit predict``'s videos.

    for i, labels in predict_stream(predictor, source):   # labels: (H, W) int64 class ids of frame i
        ...

A source is a video file path, a camera index (``0``) or device (``/dev/video0``), a stream URL
(``rtsp://``, ``http(s)://``, ...), or any iterable of (H, W, 3) uint8 RGB frames (a ROS callback's
queue, a generator); the model is built once by the caller (a ``Predictor`` or ``ExportedPredictor``).
Frame indices count the source's frames from 0, read or not, so they stay the source's positions:

- ``every=N`` predicts frames 0, N, 2N, ... (the others are skipped without colour conversion);
- ``max_frames=M`` reads source frames 0..M-1 only (so with ``every=N``, ceil(M / N) predictions);
- ``latest=True`` reads through a thread that keeps only the newest frame (:func:`latest`): a slow model
  gets the camera's present frame, never a backlog; the frames it had no time for are dropped (counted);
- an unreadable frame (a failed decode, a camera hiccup; ``None`` from an iterable) is counted in
  ``unreadable`` and skipped; a read that keeps failing (:data:`MAX_FAILED_READS` in a row) ends the source.

:func:`write_label_video` writes what ``clustvit predict`` writes for a video: ``STEM.mkv``, the labels as
8-bit grey FFV1 (lossless: every pixel's class id decodes bit-exact; OpenCV's FFmpeg writes and reads it
back), one frame per predicted frame at the source rate / ``every``, so that label frame k is source frame
k * every and the video lasts as long as the source; ``STEM.frames.json`` lists the source index of every
label frame (and the unreadable ones), which is the mapping when frames were dropped or unreadable;
optionally ``STEM_overlay.mp4``, the palette blended over the frames (MPEG-4, lossy: for eyes only).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from tqdm import tqdm

from clustvit.atomic import WriteError, atomic_path, write_json_atomic
from clustvit.deploy.runtime import ExportedPredictor
from clustvit.inference.predictor import Predictor
from clustvit.viz.draw import overlay

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".mts", ".m2ts", ".3gp", ".ogv")
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
MAX_FAILED_READS = 25  # a camera may miss a few frames; this many in a row means it is gone (or the file ended)
DEFAULT_FPS = 30.0  # what a label video gets when the source reports no usable frame rate (many streams)
LABEL_FOURCC, LABEL_SUFFIX = "FFV1", ".mkv"
OVERLAY_FOURCC, OVERLAY_SUFFIX = "mp4v", ".mp4"
T = TypeVar("T")


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_live(source: str | int | Path) -> bool:
    """A camera index, a device (``/dev/video0``) or a URL: frames arrive in real time and never end."""
    if isinstance(source, int):
        return True
    text = str(source)
    return bool(URL.match(text)) or (text.isdigit() and not Path(text).exists()) or Path(text).is_char_device()


def source_stem(source: str | int | Path) -> str:
    """The output name of a source: the file's stem, ``camera0``, or ``stream_HOST_PATH`` for a URL."""
    text = str(source)
    if isinstance(source, int) or (text.isdigit() and not Path(text).exists()):
        return f"camera{int(text)}"
    if URL.match(text):
        slug = re.sub(r"[^A-Za-z0-9]+", "_", URL.sub("", text).split("?")[0]).strip("_")
        return f"stream_{slug[:80]}"
    return Path(text).stem


@dataclass
class FrameSource:
    """An opened source: frames as ``(index, rgb (H, W, 3) uint8 | None)``, counts filled in as it is read.

    ``fps`` and ``frame_count`` are what the source reports (``None``: unknown, as for most live streams
    and every iterable); ``unreadable`` and ``dropped`` list source indices after reading.
    """

    name: str
    live: bool
    fps: float | None = None
    frame_count: int | None = None
    unreadable: list[int] = field(default_factory=list)
    dropped: int = 0
    _capture: cv2.VideoCapture | None = None
    _frames: Iterable[np.ndarray | None] | None = None

    def frames(self, every: int = 1, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """The frames with index % every == 0 and index < max_frames; unreadable ones are recorded, not yielded."""
        if every < 1:
            raise ValueError(f"every: expected a positive frame step, got {every}")
        raw = self._capture_frames(every) if self._capture is not None else enumerate(self._frames if self._frames is not None else ())
        for i, rgb in raw:
            if max_frames is not None and i >= max_frames:
                return
            if i % every:
                continue
            if rgb is None:
                self.unreadable.append(i)
                continue
            yield i, rgb

    def _capture_frames(self, every: int) -> Iterator[tuple[int, np.ndarray | None]]:
        """OpenCV's frames, BGR turned RGB; a failed read is ``None`` if a later read succeeds, else the end."""
        cap, i, failed = self._capture, 0, []
        while len(failed) < MAX_FAILED_READS:
            wanted = i % every == 0
            ok = cap.grab()  # decodes; retrieve() converts, needed only for the frames we predict
            frame = cap.retrieve()[1] if ok and wanted else None
            if not ok or (wanted and frame is None):
                failed.append(i)
            else:
                yield from ((j, None) for j in failed)  # a gap, not the end: those frames were unreadable
                failed = []
                yield i, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if wanted else None
            i += 1

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()


def open_source(source: str | int | Path | Iterable[np.ndarray | None]) -> FrameSource:
    """A path, camera index, device or URL (through OpenCV), or an iterable of RGB frames, ready to read.

    Raises:
        ValueError: ``SOURCE: cannot open video, expected a video file, camera index or stream URL``.
    """
    if not isinstance(source, str | int | Path):
        return FrameSource(name=type(source).__name__, live=False, _frames=source)
    text = str(source)
    spec: str | int = int(text) if isinstance(source, int) or (text.isdigit() and not Path(text).exists()) \
        else text
    cap = cv2.VideoCapture(spec)
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"{source}: cannot open video, expected a video file, camera index or stream URL")
    fps, count = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
    live = is_live(source)
    return FrameSource(name=text, live=live, fps=fps if math.isfinite(fps) and 0 < fps < 1000 else None,
                       frame_count=int(count) if not live and math.isfinite(count) and count > 0 else None,
                       _capture=cap)


def latest(items: Iterable[T], on_drop: threading.Event | None = None,
           join_timeout: float | None = 5.0) -> Iterator[tuple[int, T]]:
    """Iterate `items` through a reader thread that keeps only the newest: what a slow consumer gets next is
    the last item read, the ones in between are gone (``on_drop`` is set at the first drop, for tests).

    The reader stops when the consumer does (``break``, ``close()``), after its current read: ending waits
    for it up to ``join_timeout`` seconds (``None``: until it returns, as for an OpenCV capture, which must
    not be released while a read is still inside it), then leaves it behind as a daemon. An exception in
    the reader is raised to the consumer. Yields ``(dropped_so_far, item)`` pairs.
    """
    cond = threading.Condition()
    state: dict = {"has": False, "item": None, "done": False, "error": None, "stop": False, "dropped": 0}

    def read() -> None:
        try:
            for item in items:
                with cond:
                    if state["stop"]:
                        return
                    if state["has"]:  # the consumer did not take the previous one: it is replaced
                        state["dropped"] += 1
                        if on_drop is not None:
                            on_drop.set()
                    state["has"], state["item"] = True, item
                    cond.notify()
        except BaseException as e:  # handed to the consumer, which raises it where it can be seen
            state["error"] = e
        finally:
            with cond:
                state["done"] = True
                cond.notify()

    reader = threading.Thread(target=read, name="clustvit-latest-frame", daemon=True)
    reader.start()
    try:
        while True:
            with cond:
                cond.wait_for(lambda: state["has"] or state["done"])
                if not state["has"]:
                    if state["error"] is not None:
                        raise state["error"]
                    return
                item, state["has"], state["item"] = state["item"], False, None
                dropped = state["dropped"]
            yield dropped, item
    finally:
        with cond:
            state["stop"] = True
        reader.join(timeout=join_timeout)


def predict_frames(predictor: Predictor | ExportedPredictor, source: FrameSource, every: int = 1,
                   max_frames: int | None = None, use_latest: bool = False,
                   ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(index, rgb (H, W, 3) uint8, labels (H, W) int64)`` for every predicted frame of an opened source."""
    frames = source.frames(every, max_frames)
    if not use_latest:
        for i, rgb in frames:
            yield i, rgb, predictor.predict(rgb)
        return
    # An OpenCV capture is released after this; its reader must have left the capture by then (a stalled
    # stream's read ends at the backend's own timeout). A Python iterable's reader may be left behind.
    for dropped, (i, rgb) in latest(frames, join_timeout=None if source._capture is not None else 5.0):
        source.dropped = dropped
        yield i, rgb, predictor.predict(rgb)


def predict_stream(predictor: Predictor | ExportedPredictor,
                   source: str | int | Path | FrameSource | Iterable[np.ndarray | None], every: int = 1,
                   max_frames: int | None = None, latest: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame_index, labels (H, W) int64)`` for the frames of any source (the module docstring's rules).

    A path, camera index or URL is opened here and released when the iteration ends; pass an opened
    :class:`FrameSource` (:func:`open_source`) to read its ``fps``, ``unreadable`` and ``dropped`` after.
    """
    opened = source if isinstance(source, FrameSource) else open_source(source)
    try:
        for i, _, labels in predict_frames(predictor, opened, every, max_frames, latest):
            yield i, labels
    finally:
        if opened is not source:
            opened.close()


@dataclass
class VideoResult:
    """What :func:`write_label_video` wrote: label frames, and the source frames unreadable or dropped."""

    labels: Path
    frames: int
    unreadable: list[int]
    dropped: int
    interrupted: bool = False


def _writer(path: str, fourcc: str, fps: float, size: tuple[int, int], colour: bool) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (size[1], size[0]), isColor=colour)
    if not writer.isOpened():
        raise WriteError(path, f"OpenCV cannot write a {fourcc} video")
    return writer


def write_label_video(predictor: Predictor | ExportedPredictor, source: FrameSource, out_dir: Path, stem: str,
                      with_overlay: bool = False, every: int = 1, max_frames: int | None = None,
                      use_latest: bool = False) -> VideoResult:
    """Predict an opened source into ``out_dir/STEM.mkv`` (+ ``STEM.frames.json``, ``STEM_overlay.mp4``).

    Every file is written atomically; the label video, which ``--skip-existing`` looks for, comes last. A
    live source stopped with Ctrl-C keeps what it predicted (``interrupted``); a file does not (it can be
    rerun whole). Raises ValueError when the classes do not fit 8 bits, WriteError when a file cannot be written.
    """
    if len(predictor.classes) > 256:
        raise ValueError(f"{len(predictor.classes)} classes do not fit an 8-bit label video")
    label_path, over_path = out_dir / f"{stem}{LABEL_SUFFIX}", out_dir / f"{stem}_overlay{OVERLAY_SUFFIX}"
    fps = (source.fps or DEFAULT_FPS) / every
    total = None if source.frame_count is None else math.ceil(min(source.frame_count, max_frames or 1 << 62) / every)
    indices: list[int] = []
    interrupted = False
    with ExitStack() as stack:
        label_tmp = stack.enter_context(atomic_path(label_path, suffix=LABEL_SUFFIX))
        over_tmp = stack.enter_context(atomic_path(over_path, suffix=OVERLAY_SUFFIX)) if with_overlay else None
        writers: list[cv2.VideoWriter] = []
        size: tuple[int, int] | None = None
        bar = tqdm(total=total, desc=stem, unit="frame", dynamic_ncols=True)
        stack.callback(bar.close)
        stack.callback(lambda: [w.release() for w in writers])
        try:
            for i, rgb, labels in predict_frames(predictor, source, every, max_frames, use_latest):
                if size is None:  # the first frame fixes the size (streams often report none up front)
                    size = labels.shape
                    writers.append(_writer(label_tmp, LABEL_FOURCC, fps, size, colour=False))
                    if over_tmp is not None:
                        writers.append(_writer(over_tmp, OVERLAY_FOURCC, fps, size, colour=True))
                ids = labels.astype(np.uint8)
                if ids.shape != size:  # a stream that changed resolution: ids are not interpolated
                    ids = cv2.resize(ids, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
                    rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                writers[0].write(ids)
                if over_tmp is not None:
                    blended = overlay(rgb, ids, predictor.palette)
                    writers[1].write(cv2.cvtColor(np.ascontiguousarray(blended), cv2.COLOR_RGB2BGR))
                indices.append(i)
                bar.update(1)
        except KeyboardInterrupt:
            if not source.live:
                raise
            interrupted = True  # a camera never ends: Ctrl-C is how a run stops, and it keeps its output
        for w in writers:
            w.release()
        if size is None:  # nothing predicted: an empty video is no video
            raise ValueError(f"{source.name}: no readable frame"
                             + (f" ({len(source.unreadable)} unreadable)" if source.unreadable else ""))
        write_json_atomic(out_dir / f"{stem}.frames.json", {
            "source": source.name, "source_fps": source.fps, "every": every, "label_fps": fps,
            "frames": indices, "unreadable": source.unreadable, "dropped": source.dropped})
    return VideoResult(label_path, len(indices), list(source.unreadable), source.dropped, interrupted)


def read_label_video(path: str | Path) -> tuple[list[np.ndarray], float]:
    """The (H, W) uint8 class ids of every frame of a label video, and its frame rate."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open video, expected a label video written by clustvit predict")
    cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # grey frames as stored, not repeated to BGR
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame if frame.ndim == 2 else frame[:, :, 0])
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps
