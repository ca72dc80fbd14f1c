"""Prep tools on copies of the real shared samples: SUIM mask conversion and RumexWeeds preparation."""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image

from clustvit import cli
from clustvit.data import SUIM
from clustvit.data.prep_rumexweeds import LABEL_IDS
from clustvit.data.prep_suim import decode_suim_rgb

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "samples"

# Class histograms (BW HD PF WR RO RI FV SR) of the five official SUIM test masks.
SUIM_HIST = {
    "d_r_598_": [130670, 71507, 0, 0, 0, 96160, 8863, 0],
    "f_r_1965_": [232398, 0, 0, 0, 0, 15121, 59681, 0],
    "n_l_100_": [186262, 0, 0, 0, 0, 80609, 40329, 0],
    "n_l_52_": [191610, 27314, 0, 0, 88276, 0, 0, 0],
    "w_r_147_": [107364, 5676, 0, 149863, 0, 44297, 0, 0],
}
SUIM_BINARY = {"HD": 1, "WR": 3, "RO": 4, "RI": 5, "FV": 6}  # per-class 0/255 masks shipped with SUIM
RUMEX_IMG0 = "20210806_hegnstrup/seq0/imgs/20210806_hegnstrup_rgb_0_1628251180326227114.png"


@pytest.fixture(scope="module")
def samples() -> Path:
    if not SAMPLES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SAMPLES} missing (CI must have ../shared beside the repo)")
        pytest.skip(f"{SAMPLES} missing")
    return SAMPLES


def test_decode_thresholds_each_channel_at_128():
    rgb = np.array([[[0, 0, 0], [0, 0, 255], [0, 255, 0], [0, 255, 255],
                     [255, 0, 0], [255, 0, 255], [255, 255, 0], [255, 255, 255],
                     [127, 128, 30], [200, 90, 140]]], np.uint8)
    assert decode_suim_rgb(rgb).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 2, 5]]


def test_suim_cli_converts_real_masks_exactly(samples, tmp_path):
    root = tmp_path / "SUIM"
    shutil.copytree(samples / "SUIM", root)
    # The seed's `python tools/suim_mask_convert.py ROOT`, as a real process: the tools/ shim works.
    run = subprocess.run([sys.executable, str(REPO / "tools/suim_mask_convert.py"), str(root)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "5 masks converted, 0 resized, 0 failed" in run.stdout and "100%" in run.stderr  # tqdm bar
    for stem, hist in SUIM_HIST.items():
        out = Image.open(root / "TEST/masks_label" / f"{stem}.png")
        labels = np.asarray(out)
        assert out.mode == "L" and labels.shape == (480, 640)
        assert np.bincount(labels.ravel(), minlength=8).tolist() == hist
        for folder, label in SUIM_BINARY.items():  # independent oracle: the per-class binary masks
            binary = np.asarray(Image.open(root / "TEST/masks" / folder / f"{stem}.bmp")) > 127
            np.testing.assert_array_equal(binary, labels == label)
    assert not list(root.rglob("*.tmp"))


def test_suim_reports_bad_files_and_converts_the_rest(samples, tmp_path, capsys):
    split = tmp_path / "SUIM" / "test"  # lower-case test/ is found too
    shutil.copytree(samples / "SUIM" / "TEST", split)
    masks = split / "masks"
    (masks / "f_r_1965_.bmp").write_bytes((masks / "f_r_1965_.bmp").read_bytes()[:300])  # truncated
    shutil.copy(split / "images/n_l_52_.jpg", split / "images/extra_1_.jpg")  # an image without a mask
    small = Image.open(masks / "n_l_100_.bmp").resize((320, 240), Image.Resampling.NEAREST)
    noisy = np.asarray(small).astype(np.int16)
    noisy = np.clip(noisy + np.where(noisy > 127, -40, 40) * (np.arange(noisy.size).reshape(noisy.shape) % 2), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(masks / "n_l_100_.bmp")  # half size, colours off by 40
    assert cli.main(["data", "suim", str(tmp_path / "SUIM"), "--no-progress"]) == 1
    out = capsys.readouterr()
    assert "4 masks converted, 1 resized, 2 failed" in out.out
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "extra_1_.jpg: no mask" in errors[0] and "f_r_1965_.bmp: cannot convert" in errors[1]
    assert "n_l_100_.bmp: mask 320x240 differs from image 640x480, resized (nearest)" in out.err
    resized = np.asarray(Image.open(split / "masks_label/n_l_100_.png"))
    assert resized.shape == (480, 640)
    hist = np.bincount(resized.ravel(), minlength=8)
    assert set(np.flatnonzero(hist)) == {0, 5, 6}  # BW, RI, FV as in the original: noise did not leak
    assert abs(hist - np.array(SUIM_HIST["n_l_100_"])).sum() < 0.02 * resized.size
    assert not (split / "masks_label/f_r_1965_.png").exists()
    assert np.bincount(np.asarray(Image.open(split / "masks_label/w_r_147_.png")).ravel(), minlength=8).tolist() == \
        SUIM_HIST["w_r_147_"]


def _polygon_oracle(xml_path: Path, name: str, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels by point-in-polygon (matplotlib), and where that is unambiguous (>= 1.5 px from any edge)."""
    labels, safe = np.zeros((h, w), np.uint8), np.ones((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    image = next(i for i in ET.parse(xml_path).getroot().iter("image") if i.get("name") == name)
    for poly in image.findall("polygon"):
        verts = [(int(float(x)), int(float(y))) for x, y in (p.split(",") for p in poly.get("points").split(";"))]
        path = MplPath(verts)
        inside = path.contains_points(pts).reshape(h, w)
        grown = path.contains_points(pts, radius=3.0).reshape(h, w)  # radius: both signs are tried
        shrunk = path.contains_points(pts, radius=-3.0).reshape(h, w)
        safe &= grown == shrunk
        labels[inside] = LABEL_IDS[poly.get("label").strip().lower()]
    return labels, safe


def test_rumexweeds_cli_writes_masks_matching_polygons(samples, tmp_path):
    root = tmp_path / "RumexWeeds"
    shutil.copytree(samples / "RumexWeeds", root)
    assert cli.main(["data", "rumexweeds", str(root), "--no-progress"]) == 0
    counts = {s: len(list((root / "processed" / s / "masks").glob("*.png"))) for s in ("train", "val", "test")}
    assert counts == {"train": 5, "val": 2, "test": 2}
    name = Path(RUMEX_IMG0).name
    mask = np.asarray(Image.open(root / "processed/test/masks" / name))
    assert Image.open(root / "processed/test/masks" / name).mode == "L" and mask.shape == (150, 240)
    assert np.bincount(mask.ravel(), minlength=3).tolist() == [34559, 726, 715]
    assert (mask[60, 150], mask[105, 190], mask[30, 180], mask[10, 10]) == (1, 1, 2, 0)
    oracle, safe = _polygon_oracle(root / "20210806_hegnstrup/seq0/annotations_seg.xml", name, 150, 240)
    assert safe.mean() > 0.9
    # Exact but for a few pixels where the sample's self-intersecting polygons meet (fill-rule details).
    assert (mask[safe] == oracle[safe]).mean() > 0.999
    assert (root / "processed/test/images" / name).read_bytes() == (root / RUMEX_IMG0).read_bytes()
    empty = np.asarray(Image.open(root / "processed/train/masks/20210806_hegnstrup_rgb_3_1628251578112440881.png"))
    assert empty.shape == (150, 240) and empty.max() == 0  # the image with no weeds


def test_rumexweeds_label_rules_order_and_bad_files(samples, tmp_path, capsys):
    root = tmp_path / "RumexWeeds"
    shutil.copytree(samples / "RumexWeeds", root)
    xml_path = root / "20210806_hegnstrup/seq0/annotations_seg.xml"
    text = xml_path.read_text().replace('label="rumex_crispus"', 'label="  Rumex_Crispus "')
    extra = ('<polygon label="rumex_obtusifolius" points="0,0;30,0;30,30;0,30"/>'
             '<polygon label="rumex_crispus" points=" 10.9 , 10.2;40,10;40,40;10,40"/>'
             '<polygon label="dandelion" points="0,0;239,0;239,149;0,149"/>'
             '<box label="rumex_crispus" xtl="0" ytl="100" xbr="50" ybr="149"/>'
             '<ellipse label="rumex_crispus" cx="20" cy="120" rx="10" ry="10"/>')
    first = '<image id="0" name="20210806_hegnstrup_rgb_0_1628251180326227114.png" width="240" height="150">'
    xml_path.write_text(text.replace(first, first + extra))
    split = root / "dataset_splits/random_train.txt"
    split.write_text(split.read_text() + "\n  \n20210806_hegnstrup/seq0/imgs/missing.png\n")
    assert cli.main(["data", "rumexweeds", str(root), "--no-progress"]) == 1
    out = capsys.readouterr()
    assert "9 images prepared" in out.out and "1 failed" in out.out
    assert "missing.png: cannot prepare" in out.err and len(out.err.strip().splitlines()) == 1
    mask = np.asarray(Image.open(root / "processed/test/masks/20210806_hegnstrup_rgb_0_1628251180326227114.png"))
    assert (mask[5, 5], mask[20, 20], mask[35, 35], mask[10, 10]) == (1, 2, 2, 2)  # later polygon wins
    assert mask[120, 20] == 0 and mask[140, 5] == 0  # box, ellipse and unknown labels ignored
    assert (mask[30, 180], mask[60, 150]) == (2, 1)  # case/whitespace-insensitive labels still drawn


def _turned_for_orientation_6(path: Path, upright: np.ndarray, fmt: str) -> None:
    """Save `upright` as a camera would: the pixels turned 90 degrees anticlockwise plus EXIF orientation 6
    (the viewer turns them back clockwise)."""
    im = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(path, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


def test_prep_tools_size_masks_by_the_upright_image(samples, tmp_path, capsys):
    """An image stored sideways with an EXIF orientation gets a mask of its upright size (as the dataset
    reads it), not the stored one: the SUIM mask is not resized and the pair loads; RumexWeeds' mask fits."""
    root = tmp_path / "SUIM"
    shutil.copytree(samples / "SUIM", root)
    image = root / "TEST/images/n_l_52_.jpg"
    upright = np.asarray(Image.open(image).convert("RGB"))  # (480, 640, 3)
    _turned_for_orientation_6(image, upright, "JPEG")
    assert Image.open(image).size == (480, 640)  # stored 480 wide, 640 high
    assert cli.main(["data", "suim", str(root), "--no-progress"]) == 0
    assert "5 masks converted, 0 resized, 0 failed" in capsys.readouterr().out
    labels = np.asarray(Image.open(root / "TEST/masks_label/n_l_52_.png"))
    assert labels.shape == (480, 640) and np.bincount(labels.ravel(), minlength=8).tolist() == SUIM_HIST["n_l_52_"]
    test_split = SUIM(root, "test")
    sample = test_split[[p.name for p in test_split.images].index("n_l_52_.jpg")]
    assert sample["image"].shape == (3, 480, 640) and sample["mask"].shape == (480, 640)

    rumex = tmp_path / "RumexWeeds"
    shutil.copytree(samples / "RumexWeeds", rumex)
    png = rumex / RUMEX_IMG0
    _turned_for_orientation_6(png, np.asarray(Image.open(png).convert("RGB")), "PNG")
    assert Image.open(png).size == (150, 240)
    assert cli.main(["data", "rumexweeds", str(rumex), "--no-progress"]) == 0
    mask = np.asarray(Image.open(rumex / "processed/test/masks" / Path(RUMEX_IMG0).name))
    assert mask.shape == (150, 240) and np.bincount(mask.ravel(), minlength=3).tolist() == [34559, 726, 715]
