"""`clustvit.load(...).predict` and `clustvit predict` on the shared SUIM samples, random and saved weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEMO, TINY_DEMO
from PIL import Image

from clustvit import cli
from clustvit.inference.api import load, resolve_config
from clustvit.models.build import build_segmentor
from clustvit.viz.draw import colorize, overlay

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
SUIM = SHARED / "data" / "samples" / "SUIM" / "TEST" / "images"
# The demo ClustViT shrunk further, at a 64x96 test size (4x6 tokens): fast on two cores.
TINY = TINY_DEMO


def samples() -> list[Path]:
    if not SUIM.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared samples missing: {SUIM}")
        pytest.skip(f"shared samples missing: {SUIM}")
    return sorted(SUIM.iterdir())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One of our checkpoints, from a tiny model with other weights than the seeded random ones."""
    cfg = resolve_config(DEMO, TINY)
    torch.manual_seed(123)
    model = build_segmentor(cfg["model"])
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"format": "clustvit-v1", "model": model.state_dict(), "config": cfg, "iter": 1}, path)
    return path


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_api_predict_applies_the_test_resize_and_returns_input_size(checkpoint: Path) -> None:
    rgb = read(samples()[0])  # 480 x 640
    predictor = load(DEMO, checkpoint, cfg_options=TINY)
    mask = predictor.predict(rgb)
    assert mask.shape == rgb.shape[:2] and mask.dtype == np.int64
    assert 0 <= mask.min() and mask.max() < predictor.model.num_classes
    # The same by hand: resize to the test size (64 x 96), logits, back to 480 x 640, arg-max.
    x = predictor.preprocess(rgb)
    assert x.shape == (1, 3, 64, 96)
    with torch.no_grad():
        logits = F.interpolate(predictor.model.predict_logits(x), (480, 640), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(mask, logits[0].argmax(0).numpy())
    # The checkpoint's weights were loaded: random weights predict differently.
    assert not np.array_equal(mask, load(DEMO, None, cfg_options=TINY).predict(rgb))
    assert predictor.classes == ("sky", "grass", "water", "rock", "weed", "robot")


def test_api_rejects_non_rgb_arrays() -> None:
    predictor = load(DEMO, None, cfg_options=TINY)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor.predict(np.zeros((8, 8, 2), dtype=np.uint8))  # grey (8, 8) is accepted: as_rgb


def test_predict_cli_writes_labels_and_overlays(tmp_path: Path, checkpoint: Path) -> None:
    files = samples()
    out = tmp_path / "out"
    argv = [str(DEMO), str(checkpoint), str(SUIM), "--out", str(out), "--overlay", "--cfg-options", *TINY]
    assert cli.main(["predict", *argv]) == 0
    predictor = load(DEMO, checkpoint, cfg_options=TINY)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{f.stem}.png" for f in files] + [f"{f.stem}_overlay.png" for f in files]
    )
    for f in files[:2]:
        rgb = read(f)
        label = Image.open(out / f"{f.stem}.png")
        assert label.mode == "L" and label.size == (rgb.shape[1], rgb.shape[0])
        mask = predictor.predict(rgb)
        np.testing.assert_array_equal(np.asarray(label), mask)
        over = np.asarray(Image.open(out / f"{f.stem}_overlay.png"))
        assert over.shape == rgb.shape
        np.testing.assert_array_equal(over, overlay(rgb, mask, predictor.palette))
        # Half image, half palette colour: the colour of every pixel's class is in there.
        colour = colorize(mask, predictor.palette).astype(int)
        assert np.abs(2 * over.astype(int) - rgb.astype(int) - colour).max() <= 2


def test_predict_cli_random_weights_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    one = samples()[0]
    assert cli.main(["predict", str(DEMO), "none", str(one), "--out", str(tmp_path), "--amp",
                     "--cfg-options", *TINY]) == 0
    label = np.asarray(Image.open(tmp_path / f"{one.stem}.png"))
    assert label.shape == (480, 640)
    # bfloat16 autocast on CPU: nearly every pixel as in float32 (random logits are close together).
    assert (label == load(DEMO, None, cfg_options=TINY).predict(read(one))).mean() > 0.9
    assert cli.main(["predict", str(DEMO), "none", str(tmp_path / "missing.jpg"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "missing.jpg" in err
