"""Your own labelled folder: every layout loads to the labels that were drawn, and `data check` catches
each planted label error in one line naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from folder_data import CLASSES, COLOURS, make_folder, save_mask, scene
from PIL import Image

from clustvit.data.base import DatasetError
from clustvit.data.check import check_folder
from clustvit.data.folder import Folder, read_labelmap

LAYOUTS = {  # name -> make_folder arguments
    "flat, 8-bit index, split lists": dict(layout="flat"),
    "flat, 16-bit index, seeded split": dict(layout="flat", bit16=True, with_lists=False),
    "split_dirs": dict(layout="split_dirs"),
    "voc colour (CVAT export)": dict(layout="voc", colour=True),
    "voc colour, default.txt only": dict(layout="voc", colour=True, with_lists=False),
}


def drawn_masks(n: int = 6, size: tuple[int, int] = (48, 64)) -> dict[str, np.ndarray]:
    """The class ids make_folder drew, by file stem (same seed, same order)."""
    rng = np.random.default_rng(0)
    return {f"img{i:03d}": scene(rng, size, len(CLASSES))[1] for i in range(n)}


@pytest.mark.parametrize("kwargs", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_layout_reads_the_labels_that_were_drawn(tmp_path: Path, kwargs: dict) -> None:
    root = make_folder(tmp_path / "data", **kwargs)
    truth = drawn_masks()
    seen = set()
    for split in ("train", "val", "test"):
        ds = Folder(root, split)
        assert ds.classes == CLASSES and len(ds) > 0
        for i in range(len(ds)):
            item = ds[i]
            stem = Path(item["path"]).stem
            np.testing.assert_array_equal(item["mask"].numpy(), truth[stem])
            seen.add((split, stem))
    train = {s for sp, s in seen if sp == "train"}
    val = {s for sp, s in seen if sp == "val"}
    assert train and val and not train & val and train | val == set(truth)  # disjoint, all images used


def test_voc_palette_comes_from_the_labelmap(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "voc", layout="voc", colour=True)
    assert read_labelmap(root / "labelmap.txt") == (CLASSES, COLOURS)
    assert Folder(root, "train").palette == COLOURS


def test_reduce_zero_label_and_ignore_value(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "rz", layout="flat", reduce_zero=True)  # class k stored as k + 1
    ds = Folder(root, "train", reduce_zero_label=True)
    stem = Path(ds[0]["path"]).stem
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), drawn_masks()[stem])
    mask = np.array(Image.open(root / "masks" / f"{stem}.png"))
    mask[:4] = 0  # unlabelled rows
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    assert (ds[0]["mask"][:4] == 255).all() and (ds[0]["mask"][4:] < 3).all()


def test_check_passes_clean_data(tmp_path: Path) -> None:
    report = check_folder(make_folder(tmp_path / "clean", layout="split_dirs"))
    assert report.ok, report.render()
    assert report.suggestions == []
    assert report.split_sizes == {"train": 4, "val": 2, "test": 2}
    truth = np.stack(list(drawn_masks().values()))
    np.testing.assert_array_equal(report.pixels, np.bincount(truth.ravel(), minlength=3))
    assert report.images.tolist() == [6, 6, 6] and report.unlabelled == 0
    assert "ok: no errors" in report.render()


def _plant(root: Path, case: str) -> str:
    """Plant one label error in a clean flat folder; returns the file the report must name."""
    mask_path = root / "masks" / "img001.png"
    mask = np.array(Image.open(mask_path))
    if case == "value outside the classes":
        mask[0, 0] = 7
        Image.fromarray(mask).save(mask_path)
    elif case == "size mismatch":
        Image.fromarray(mask[:-2]).save(mask_path)
    elif case == "image without a mask":
        mask_path.unlink()
        return str(root / "images" / "img001.png")
    return str(mask_path)


@pytest.mark.parametrize("case, kind", [
    ("value outside the classes", "values outside the classes"),
    ("size mismatch", "size mismatches"),
    ("image without a mask", "images without a mask"),
])
def test_check_and_the_dataset_catch_each_planted_error(tmp_path: Path, case: str, kind: str) -> None:
    root = make_folder(tmp_path / "bad", layout="flat")
    culprit = _plant(root, case)
    report = check_folder(root)
    assert not report.ok and list(report.errors) == [kind]
    assert len(report.errors[kind]) == 1 and report.errors[kind][0].startswith(culprit)
    with pytest.raises(DatasetError) as err:  # training stops at the same file, in one line
        ds = Folder(root, "train")
        for i in range(len(ds)):
            ds[i]
    assert culprit in str(err.value) and "\n" not in str(err.value)


def test_check_catches_a_colour_not_in_the_palette(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "voc", layout="voc", colour=True)
    rgb = np.array(Image.open(root / "SegmentationClass" / "img002.png"))
    rgb[5, 6] = (1, 2, 3)
    Image.fromarray(rgb).save(root / "SegmentationClass" / "img002.png")
    report = check_folder(root)
    assert list(report.errors) == ["colours not in the palette"]
    assert report.errors["colours not in the palette"][0].startswith(str(root / "SegmentationClass" / "img002.png"))
    assert "(1, 2, 3) on 1 pixels" in report.errors["colours not in the palette"][0]
    with pytest.raises(DatasetError, match=r"img002.png: colour \(1, 2, 3\) at \(x=6, y=5\) is not in the palette"):
        ds = Folder(root, "test")
        [ds[i] for i in range(len(ds))]


def test_check_suggests_when_zero_is_background_under_reduce_zero_label(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "bg", layout="flat")  # 0 = background, a real class
    report = check_folder(root, classes=["hull", "rust"], reduce_zero_label=True)
    assert report.ok  # the labels load ...
    assert any("value 0 covers" in s and "reduce_zero_label=False" in s for s in report.suggestions)  # ... but look off


def test_check_suggests_reduce_zero_label_for_one_based_masks(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "one", layout="flat", reduce_zero=True)  # values 1..3, never 0
    report = check_folder(root)
    assert list(report.errors) == ["values outside the classes"]
    assert any("set reduce_zero_label=True" in s for s in report.suggestions)


def test_structural_problems_are_one_line(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "nocls", layout="flat")
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="no class names, expected classes.txt"):
        Folder(root, "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset layout found"):
        Folder(tmp_path / "empty", "train")
    save_mask(tmp_path / "x.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DatasetError, match="dataset folder not found"):
        Folder(tmp_path / "missing", "train")


def test_a_folder_with_a_test_split_only_is_checked_and_read(tmp_path: Path) -> None:
    """Images to evaluate on, nothing to train on: check and the test split work; train says what is missing."""
    root = make_folder(tmp_path / "t", layout="split_dirs")
    (root / "train").rename(root / "test")
    shutil.rmtree(root / "val")
    report = check_folder(root)
    assert report.ok and report.split_sizes == {"test": 4}
    assert len(Folder(root, "test")) == 4
    with pytest.raises(DatasetError, match=r"no train split \(found: test\)"):
        Folder(root, "train")
