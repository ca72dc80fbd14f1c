"""Inference where users break things: folders with broken files, phone photos, huge images, odd arrays.

A tiny ClustViT (width 32, depth 2) at a 64x96 test size; images are written here, so nothing is downloaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEMO, TINY_DEMO
from PIL import Image

from clustvit import cli
from clustvit.data.base import read_image
from clustvit.data.datasets import ADE20K
from clustvit.inference.api import load
from clustvit.inference.predict import output_stems
from clustvit.inference.predictor import as_rgb, upsampled_argmax

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_DEMO

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def predictor():
    return load(DEMO, None, cfg_options=TINY)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth RGB image (JPEG keeps it close), (h, w, 3) uint8."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.05, 0.3, 3)
    return np.stack([127 + 120 * np.sin(a * x), 127 + 120 * np.cos(b * y), 127 + 120 * np.sin(c * (x + y))],
                    axis=-1).astype(np.uint8)


def _exif_jpeg(path: Path, rgb: np.ndarray, orientation: int) -> None:
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = orientation  # Orientation tag: 6 = the viewer turns the sensor image 90 degrees clockwise
    im.save(path, "JPEG", exif=exif, quality=95)


# ------------------------------------------------------------------------ bulk prediction
def test_a_folder_with_broken_files_is_done_except_those_and_resumes(tmp_path: Path, predictor,
                                                                     capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_image(40, 56, i)).save(src / f"good_{i}.png")
    (src / "cut.jpg").write_bytes((src / "good_0.png").read_bytes()[:200])  # truncated (and not even a JPEG)
    (src / "notes.jpg").write_text("not an image\n")
    argv = [str(DEMO), "none", str(src), "--out", str(out), "--cfg-options", *TINY]

    assert cli.main(["predict", *argv]) == 1
    cap = capsys.readouterr()
    errors = [line for line in cap.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0].startswith(f"error: {src / 'cut.jpg'}: cannot decode image")
    assert errors[1].startswith(f"error: {src / 'notes.jpg'}: cannot decode image")
    assert cap.out.strip() == f"wrote 3 label PNG(s) to {out}; 2 failed (listed above)"
    assert sorted(p.name for p in out.iterdir()) == ["good_0.png", "good_1.png", "good_2.png"]  # no temp files
    for i in range(3):
        expected = predictor.predict(read_image(src / f"good_{i}.png"))
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"good_{i}.png")), expected)

    # Half done (one label lost): --skip-existing redoes that one only and leaves the others' bytes alone.
    kept = {name: (out / name).stat().st_mtime_ns for name in ("good_0.png", "good_2.png")}
    lost = (out / "good_1.png").read_bytes()
    (out / "good_1.png").unlink()
    assert cli.main(["predict", *argv, "--skip-existing"]) == 1
    assert capsys.readouterr().out.strip() == (f"wrote 1 label PNG(s) to {out}; 2 skipped (already there); "
                                               "2 failed (listed above)")
    assert (out / "good_1.png").read_bytes() == lost
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    # Only good files: exit 0.
    assert cli.main(["predict", str(DEMO), "none", str(src / "good_0.png"), "--out", str(tmp_path / "o2"),
                     "--cfg-options", *TINY]) == 0


# ------------------------------------------------------------------------ EXIF orientation
def test_exif_orientation_is_applied_like_the_official_decoder(tmp_path: Path, predictor,
                                                              capsys: pytest.CaptureFixture) -> None:
    """A phone JPEG stored 24x40 (sensor) with orientation 6 is shown 40 rows x 24 columns: read upright,
    as OpenCV's IMREAD_COLOR (mmcv's default decode, the official pipeline's) reads it; labels line up."""
    sensor = _image(24, 40, 7)
    path = tmp_path / "phone.jpg"
    _exif_jpeg(path, sensor, 6)
    upright = read_image(path)
    assert upright.shape == (40, 24, 3)
    raw = np.asarray(Image.open(path).convert("RGB"))  # the sensor order, as read before
    np.testing.assert_array_equal(upright, np.rot90(raw, k=-1))  # 6: turned 90 degrees clockwise
    official = cv2.cvtColor(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert official.shape == upright.shape and np.abs(official.astype(int) - upright).max() <= 2

    assert cli.main(["predict", str(DEMO), "none", str(path), "--out", str(tmp_path / "out"),
                     "--cfg-options", *TINY]) == 0
    label = np.asarray(Image.open(tmp_path / "out" / "phone.png"))
    np.testing.assert_array_equal(label, predictor.predict(upright))  # the size and orientation viewers show

    # A dataset image the same: its upright mask (drawn on what the annotator saw) fits it.
    root = tmp_path / "ade"
    (root / "images/validation").mkdir(parents=True)
    (root / "annotations/validation").mkdir(parents=True)
    _exif_jpeg(root / "images/validation/a.jpg", sensor, 6)
    mask = np.zeros((40, 24), np.uint8)
    mask[:10] = 5  # the top of the upright image
    Image.fromarray(mask).save(root / "annotations/validation/a.png")
    sample = ADE20K(root, "val")[0]
    assert sample["image"].shape == (3, 40, 24) and sample["mask"].shape == (40, 24)
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), upright)
    capsys.readouterr()


# ------------------------------------------------------------------------ bounded memory
@pytest.mark.parametrize("h, w, H, W, n", [(32, 48, 240, 320, 150), (37, 53, 301, 403, 150), (64, 96, 57, 80, 6),
                                           (17, 23, 1000, 999, 21), (9, 9, 90, 90, 19), (20, 30, 200, 300, 3),
                                           (1, 1, 5, 7, 4), (5, 5, 9, 9, 1)])
def test_upsampled_argmax_equals_the_full_upsampling(h: int, w: int, H: int, W: int, n: int) -> None:
    """Labels identical to interpolating every class at once then arg-max, ties included, for any slicing."""
    g = torch.Generator().manual_seed(h * w + n)
    logits = torch.randn(n, h, w, generator=g)
    logits[:, : max(h // 3, 1)] = logits[0:1, : max(h // 3, 1)]  # exact ties between all classes there
    full = F.interpolate(logits[None], (H, W), mode="bilinear", align_corners=False)[0]
    expected = full.argmax(0)
    assert (full[0] == full.max(0).values).any()  # the ties reach the output
    for classes in (1, 2, 3, 4, 7, n):  # classes per slice (3 is split: see upsampled_argmax)
        assert torch.equal(upsampled_argmax(logits, (H, W), 4 * H * W * classes), expected), classes
    assert torch.equal(upsampled_argmax(logits, (H, W)), expected)  # the default slicing


def _vm(key: str) -> int:
    """A /proc/self/status memory figure in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) << 10
    raise KeyError(key)


def test_predict_memory_does_not_grow_with_classes_times_pixels(tmp_path: Path) -> None:
    """150 classes, a 1500 x 1000 image: the full-resolution logits alone would be 900 MB; the peak stays
    far below, and the labels equal the full upsampling's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size (Linux >= 4.0)
    except OSError as e:
        pytest.skip(f"cannot reset the peak RSS here ({e})")
    predictor = load(DEMO, None, cfg_options=[*TINY, "model.num_classes=150"])
    image = _image(1000, 1500, 3)
    predictor.predict(image[:100, :150])  # warm up the model's own allocations
    rss = _vm("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    labels = predictor.predict(image)
    peak = _vm("VmHWM") - rss
    print(f"\npeak above the resident size before: {peak / 2**20:.0f} MiB")
    assert labels.shape == (1000, 1500) and labels.dtype == np.int64
    assert peak < 400 << 20  # measured ~130 MiB; the full-resolution logits were 900 MB
    expected = predictor.predict_logits(image[:200, :300]).argmax(0).numpy()
    np.testing.assert_array_equal(predictor.predict(image[:200, :300]), expected)


# ------------------------------------------------------------------------ input validation
def test_predict_converts_grey_rgba_and_unit_floats(predictor) -> None:
    rgb = _image(48, 72, 5)
    ref = predictor.predict(rgb)
    grey = rgb[:, :, 1]
    rgba = np.concatenate([rgb, np.full((48, 72, 1), 17, np.uint8)], axis=2)
    np.testing.assert_array_equal(predictor.predict(rgba), ref)  # alpha dropped, not blended
    np.testing.assert_array_equal(predictor.predict(rgb / 255.0), ref)  # [0, 1] floats, scaled and rounded
    np.testing.assert_array_equal(predictor.predict((rgb / 255.0).astype(np.float32)), ref)
    np.testing.assert_array_equal(predictor.predict(grey), predictor.predict(np.repeat(grey[:, :, None], 3, 2)))
    np.testing.assert_array_equal(predictor.predict(grey[:, :, None]), predictor.predict(grey))
    np.testing.assert_array_equal(predictor.predict(rgb[:, ::-1]), predictor.predict(rgb[:, ::-1].copy()))
    assert as_rgb(rgb) is rgb  # the common case is not copied
    # The same conversions as PIL's for a file on disk.
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG")
    np.testing.assert_array_equal(as_rgb(rgba), np.asarray(Image.open(buf).convert("RGB")))


@pytest.mark.parametrize("bad, words", [
    (np.zeros((0, 5, 3), np.uint8), "shape (0, 5, 3)"),
    (np.zeros((5, 0), np.uint8), "shape (5, 0)"),
    (np.zeros(0, np.uint8), "shape (0,)"),
    (np.zeros(12, np.uint8), "shape (12,)"),
    (np.zeros((2, 4, 4, 3), np.uint8), "shape (2, 4, 4, 3)"),
    (np.zeros((4, 4, 2), np.uint8), "shape (4, 4, 2)"),
    (np.full((4, 4, 3), 200.0), "must lie in [0, 1] (got 200..200)"),
    (np.full((4, 4, 3), np.nan, np.float32), "must lie in [0, 1]"),
    (np.zeros((4, 4, 3), np.uint16), "got uint16"),
    ([[1, 2], [3, 4]], "got list"),
])
def test_predict_rejects_what_it_cannot_mean_in_one_value_error(predictor, bad, words: str) -> None:
    with pytest.raises(ValueError) as err:
        predictor.predict(bad)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_output_names_never_collide() -> None:
    """Three inputs with one stem (from different folders) and a file already named like a suffixed one."""
    files = [Path("a/x.jpg"), Path("b/x.jpg"), Path("c/x.jpg"), Path("d/x_jpg.png"), Path("e/x.png")]
    stems = output_stems(files)
    assert stems == ["x", "x_jpg", "x_jpg_2", "x_jpg_png", "x_png"] and len(set(stems)) == len(stems)
