"""Videos, cameras and streams: label videos equal per-frame prediction, --every, --max-frames, broken
frames and sources, the Python API over a generator, and drop-to-latest (events, no timing).

A tiny ClustViT (width 32, depth 2) at a 64x96 test size; the videos are written here with OpenCV.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEMO, TINY_DEMO

from clustvit import cli
from clustvit.inference.api import load
from clustvit.inference.stream import latest, open_source, predict_stream, read_label_video

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_DEMO
ERROR = "cannot open video, expected a video file, camera index or stream URL"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def predictor():
    return load(DEMO, None, cfg_options=TINY)


def frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """(h, w, 3) uint8 RGB: smooth colour bands that move with i (the model sees different scenes)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 4 + i * 25) % 256, (y * 5 + i * 7) % 256, ((x + y) * 3 + i * 40) % 256],
                    axis=-1).astype(np.uint8)


def write_video(path: Path, n: int = 12, fps: float = 10.0, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(cv2.cvtColor(frame(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decoded(path: Path) -> list[np.ndarray]:
    """The source's frames as OpenCV decodes them (lossy codecs: not the frames written), RGB."""
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def predict_cli(*args: str) -> int:
    return cli.main(["predict", str(DEMO), "none", *args, "--cfg-options", *TINY])


# ------------------------------------------------------------------------ label videos from the command
def test_video_becomes_a_lossless_label_video_equal_to_per_frame_prediction(tmp_path: Path, predictor,
                                                                            capsys: pytest.CaptureFixture) -> None:
    src, out = write_video(tmp_path / "clip.mp4"), tmp_path / "out"
    assert predict_cli(str(src), "--out", str(out), "--overlay") == 0
    assert "1 label video(s) (12 frames)" in capsys.readouterr().out
    labels, fps = read_label_video(out / "clip.mkv")
    source = decoded(src)
    assert len(labels) == len(source) == 12 and fps == 10.0
    for rgb, ids in zip(source, labels):
        assert np.array_equal(ids, predictor.predict(rgb)), "the label video is not the per-frame prediction"
    assert len(decoded(out / "clip_overlay.mp4")) == 12
    index = json.loads((out / "clip.frames.json").read_text())
    assert index["frames"] == list(range(12)) and index["unreadable"] == [] and index["label_fps"] == 10.0
    # --skip-existing: the label video is there, nothing is redone.
    assert predict_cli(str(src), "--out", str(out), "--overlay", "--skip-existing") == 0
    summary = capsys.readouterr().out
    assert "wrote 0 label PNG(s)" in summary and "1 skipped" in summary


def test_every_and_max_frames_keep_source_indices(tmp_path: Path, predictor) -> None:
    src, out = write_video(tmp_path / "clip.avi", fourcc="MJPG"), tmp_path / "out"
    assert predict_cli(str(src), "--out", str(out), "--every", "3", "--max-frames", "8") == 0
    labels, fps = read_label_video(out / "clip.mkv")
    source = decoded(src)
    # frames 0, 3, 6 at a third of the rate: as long as the 8 source frames (Matroska keeps the rate to 1 ms)
    assert len(labels) == 3 and fps == pytest.approx(10.0 / 3, rel=1e-3)
    assert json.loads((out / "clip.frames.json").read_text())["frames"] == [0, 3, 6]
    for k, ids in zip([0, 3, 6], labels):
        assert np.array_equal(ids, predictor.predict(source[k]))


def test_an_unreadable_frame_is_counted_and_skipped(tmp_path: Path, predictor, capsys: pytest.CaptureFixture) -> None:
    src = write_video(tmp_path / "good.avi", fourcc="MJPG")
    data = bytearray(src.read_bytes())
    starts = [k for k in range(len(data) - 1) if data[k] == 0xFF and data[k + 1] == 0xD8]  # JPEG frames
    assert len(starts) == 12
    data[starts[5]:starts[5] + 600] = bytes(600)  # frame 5 no longer decodes
    broken = tmp_path / "broken.avi"
    broken.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert predict_cli(str(broken), "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "1 unreadable frame(s) skipped" in captured.out and "unreadable frame(s) skipped: 5" in captured.err
    index = json.loads((out / "broken.frames.json").read_text())
    assert index["unreadable"] == [5] and index["frames"] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    labels, _ = read_label_video(out / "broken.mkv")
    for rgb, ids in zip(decoded(broken), labels):  # the reader's frames, without the broken one
        assert np.array_equal(ids, predictor.predict(rgb))


@pytest.mark.parametrize("source", ["not_a_video.mp4", "9", "/dev/null", "rtsp://127.0.0.1:9/none"])
def test_an_unreadable_source_is_one_line(tmp_path: Path, source: str, capsys: pytest.CaptureFixture) -> None:
    if source.endswith(".mp4"):
        source = str(tmp_path / source)
        Path(source).write_text("not a video")
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), frame(0))
    assert predict_cli(source, str(image), "--out", str(tmp_path / "out")) == 1  # the image is still written
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [f"error: {source}: {ERROR}"]
    assert (tmp_path / "out" / "a.png").is_file()


def test_a_stream_url_with_latest(tmp_path: Path, predictor, capsys: pytest.CaptureFixture) -> None:
    """An HTTP stream is a live source: --latest reads it in a thread; every label frame is the prediction
    of the source frame its index names (how many are dropped depends on speed: not asserted)."""
    src = write_video(tmp_path / "clip.mkv", fourcc="FFV1")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.mkv"
        assert predict_cli(url, "--out", str(tmp_path / "out"), "--latest") == 0
    finally:
        server.shutdown()
    stem = f"stream_127_0_0_1_{server.server_address[1]}_clip_mkv"
    index = json.loads((tmp_path / "out" / f"{stem}.frames.json").read_text())
    labels, _ = read_label_video(tmp_path / "out" / f"{stem}.mkv")
    assert len(labels) == len(index["frames"]) >= 1 and index["frames"] == sorted(set(index["frames"]))
    source = decoded(src)
    for k, ids in zip(index["frames"], labels):
        assert np.array_equal(ids, predictor.predict(source[k]))
    assert len(index["frames"]) + index["dropped"] == 12


# ------------------------------------------------------------------------ the Python API
def test_predict_stream_over_a_generator_like_a_robot_loop(predictor) -> None:
    def camera() -> Iterator[np.ndarray | None]:  # a driver that misses frame 2
        for i in range(6):
            yield None if i == 2 else frame(i)

    got = list(predict_stream(predictor, camera()))
    assert [i for i, _ in got] == [0, 1, 3, 4, 5]
    for i, labels in got:
        assert labels.shape == (48, 64) and np.array_equal(labels, predictor.predict(frame(i)))
    opened = open_source(camera())
    assert [i for i, _ in predict_stream(predictor, opened, every=2, max_frames=5)] == [0, 4]
    assert opened.unreadable == [2] and opened.fps is None
    stacked = np.stack([frame(i) for i in range(3)])  # (3, H, W, 3): an array of frames is a source too
    assert [i for i, _ in predict_stream(predictor, stacked)] == [0, 1, 2]


def test_latest_hands_a_slow_consumer_the_newest_item() -> None:
    """A fast source and a consumer that waits until the source has finished: after its first item it
    gets the last one; everything between was dropped. Ordered by events, not by time."""
    finished = threading.Event()

    def fast_source() -> Iterator[int]:
        yield from range(10)
        finished.set()  # the reader asked for more after storing 9: 9 is in the slot

    got = []
    for item in latest(fast_source()):
        got.append(item)  # (dropped so far, item)
        assert finished.wait(timeout=30)
    seen = [i for _, i in got]
    # The first item may already be a later one (the reader ran ahead before the consumer woke up).
    assert seen[-1] == 9 and seen == sorted(set(seen)) and len(seen) <= 2
    assert got[-1][0] == 10 - len(seen)  # every item not seen was dropped


def test_latest_with_the_model_and_a_reader_error(predictor) -> None:
    finished = threading.Event()

    def camera() -> Iterator[np.ndarray]:
        for i in range(10):
            yield frame(i)
        finished.set()

    seen = []
    for i, labels in predict_stream(predictor, camera(), latest=True):
        seen.append(i)
        assert np.array_equal(labels, predictor.predict(frame(i)))
        finished.wait(timeout=30)
    assert seen[-1] == 9 and len(seen) <= 2

    def broken() -> Iterator[np.ndarray]:
        yield frame(0)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        for _ in predict_stream(predictor, broken(), latest=True):
            pass
