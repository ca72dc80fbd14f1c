"""Datasets on the real shared samples, bad data, the synthetic dataset, build_dataset and collate."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clustvit.data import ADE20K, SUIM, DatasetError, RumexWeeds, Synthetic, build_dataset, collate
from clustvit.data.prep_rumexweeds import prepare_rumexweeds
from clustvit.data.prep_suim import convert_suim

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples"
ADE_ROOT = SAMPLES / "ADE20K" / "ADEChallengeData2016"


@pytest.fixture(scope="module")
def samples() -> Path:
    if not SAMPLES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SAMPLES} missing (CI must have ../shared beside the repo)")
        pytest.skip(f"{SAMPLES} missing")
    return SAMPLES


ADE_TEST_PIPELINE = dict(scale=(2048, 512), keep_ratio=True)


def test_ade20k_reduce_zero_label_on_real_samples(samples):
    ds = build_dataset(dict(type="ADE20K", root=str(ADE_ROOT), test_pipeline=ADE_TEST_PIPELINE), "val")
    assert len(ds) == 2 and ds.num_classes == 150 and len(ds.palette) == 150 and ds.classes[2] == "sky"
    expected_sizes = [(512, 683), (300, 400)]
    for i, sample in enumerate(ds):
        raw = np.asarray(Image.open(ADE_ROOT / "annotations" / "validation" / f"{Path(sample['path']).stem}.png"))
        reduced = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
        assert sample["mask"].dtype == torch.int64 and sample["image"].dtype == torch.uint8
        np.testing.assert_array_equal(sample["mask"].numpy(), reduced)  # mask at original resolution
        assert sample["orig_size"] == expected_sizes[i]
        assert tuple(sample["image"].shape) == (3, 512, 683)  # short side -> 512 for both images
    masks = [ds[i]["mask"] for i in range(2)]
    assert int(masks[0][masks[0] != 255].max()) == 17 and int(masks[1][masks[1] != 255].max()) == 102
    assert (masks[0] == 255).sum() == (np.asarray(Image.open(ADE_ROOT / "annotations/validation/ADE_val_00000001.png")) == 0).sum()
    assert [Path(s["path"]).name for s in ADE20K(ADE_ROOT, "test")] == ["ADE_val_00000001.jpg", "ADE_val_00000003.jpg"]


@pytest.fixture()
def ade_copy(samples, tmp_path) -> Path:
    root = tmp_path / "ade"
    shutil.copytree(ADE_ROOT, root)
    return root


def _damage(root: Path, how: str) -> str:
    """Break the copy in one way; return a fragment the error must contain."""
    img = root / "images/validation/ADE_val_00000003.jpg"
    ann = root / "annotations/validation/ADE_val_00000003.png"
    if how == "truncated_image":
        img.write_bytes(img.read_bytes()[:2000])
        return "ADE_val_00000003.jpg: cannot decode image"
    if how == "missing_mask":
        ann.unlink()
        return "ADE_val_00000003.jpg: mask missing, expected"
    if how == "size_mismatch":
        Image.fromarray(np.zeros((10, 20), np.uint8)).save(ann)
        return "ADE_val_00000003.png: mask size 20x10 differs from image"
    if how == "label_out_of_range":
        Image.fromarray(np.full((300, 400), 200, np.uint8)).save(ann)
        return "ADE_val_00000003.png: label value 200 out of range, expected 0..150"
    if how == "rgb_mask":
        Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(ann)
        return "label image has mode RGB"
    for p in (root / "images/validation").iterdir():
        p.unlink()
    return "empty image folder"


@pytest.mark.parametrize("how", ["truncated_image", "missing_mask", "size_mismatch", "label_out_of_range",
                                 "rgb_mask", "empty_folder"])
def test_ade20k_bad_data_gives_one_line_error(ade_copy, how):
    fragment = _damage(ade_copy, how)
    with pytest.raises(DatasetError) as err:
        ds = ADE20K(ade_copy, "val")  # cheap checks fail here ...
        for i in range(len(ds)):
            ds[i]  # ... decoding, sizes and labels when read
    assert fragment in str(err.value) and "\n" not in str(err.value)
    if how in ("missing_mask", "empty_folder"):  # caught at construction
        with pytest.raises(DatasetError):
            ADE20K(ade_copy, "val")


@pytest.fixture(scope="module")
def suim_root(samples, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suim")
    shutil.copytree(samples / "SUIM" / "TEST", root / "TEST")
    shutil.copytree(samples / "SUIM" / "TEST", root / "train_val", ignore=shutil.ignore_patterns("FV", "HD", "RI", "RO", "WR"))
    assert not convert_suim(root, progress=False).errors
    return root


def test_suim_test_split_reads_converted_masks(suim_root):
    ds = build_dataset(dict(type="SUIM", root=str(suim_root), test_pipeline=dict(scale=(512, 512), keep_ratio=False)),
                       "test")
    assert len(ds) == 5 and ds.num_classes == 8 and ds.palette[3] == (0, 255, 255)
    sample = ds[0]  # d_r_598_: BW, HD, RI, FV
    assert Path(sample["path"]).name == "d_r_598_.jpg" and tuple(sample["image"].shape) == (3, 512, 512)
    assert sample["orig_size"] == (480, 640)
    assert torch.bincount(sample["mask"].flatten(), minlength=8).tolist() == [130670, 71507, 0, 0, 0, 96160, 8863, 0]


def test_suim_seeded_split_is_written_stable_and_checked(suim_root):
    train = SUIM(suim_root, "train", split_seed=0, val_fraction=0.2)
    val = SUIM(suim_root, "val", split_seed=0, val_fraction=0.2)
    names = lambda ds: {Path(p).name for p in ds.images}  # noqa: E731
    assert len(train) == 4 and len(val) == 1 and not names(train) & names(val)
    assert names(train) | names(val) == {p.name for p in (suim_root / "TEST/images").iterdir()}
    split_file = suim_root / "train_val/split_seed0.json"
    stored = json.loads(split_file.read_text())
    assert set(stored["val"]) == names(val) and stored["seed"] == 0
    assert names(SUIM(suim_root, "val", split_seed=0, val_fraction=0.2)) == names(val)  # read back
    with pytest.raises(DatasetError, match="val_fraction=0.2, not 0.4"):
        SUIM(suim_root, "val", split_seed=0, val_fraction=0.4)
    other = SUIM(suim_root, "train", split_seed=1, val_fraction=0.2)
    assert (suim_root / "train_val/split_seed1.json").is_file() and len(other) == 4
    stored["train"].append("ghost.jpg")
    (suim_root / "train_val/split_seed7.json").write_text(json.dumps({**stored, "seed": 7}))
    with pytest.raises(DatasetError, match="split_seed7.json: names ghost.jpg"):
        SUIM(suim_root, "train", split_seed=7, val_fraction=0.2)


def test_rumexweeds_prepared_splits(samples, tmp_path):
    root = tmp_path / "RumexWeeds"
    shutil.copytree(samples / "RumexWeeds", root)
    with pytest.raises(DatasetError, match="rumexweeds_prepare.py"):
        RumexWeeds(root, "train")
    assert not prepare_rumexweeds(root, progress=False).errors
    assert [len(RumexWeeds(root, s)) for s in ("train", "val", "test")] == [5, 2, 2]
    ds = build_dataset(dict(type="RumexWeeds", root=str(root), test_pipeline=dict(scale=(512, 512), keep_ratio=False)),
                       "val")
    sample = ds[0]
    assert tuple(sample["image"].shape) == (3, 512, 512) and tuple(sample["mask"].shape) == (150, 240)
    assert set(sample["mask"].unique().tolist()) == {0, 1, 2} and ds.classes[2] == "rumex_crispus"
    assert len(RumexWeeds(root / "processed", "test")) == 2  # root may also be processed/ itself


def test_synthetic_is_deterministic_varied_and_fast():
    a, b = Synthetic("train", num_images=40, seed=3), Synthetic("train", num_images=40, seed=3)
    for i in (0, 7, 39):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["mask"], b[i]["mask"])
    assert not torch.equal(a[0]["image"], a[1]["image"])
    assert not torch.equal(a[0]["mask"], Synthetic("train", seed=4)[0]["mask"])
    assert not torch.equal(a[0]["mask"], Synthetic("val", seed=3)[0]["mask"])
    assert len(Synthetic("val", num_eval_images=8)) == 8 and a.classes[:3] == ("sky", "grass", "water")
    counts = sum(torch.bincount(a[i]["mask"].flatten(), minlength=6) for i in range(40))
    assert (counts > 0).all() and counts[:3].sum() / counts.sum() > 0.75  # mostly homogeneous background
    assert tuple(a[0]["image"].shape) == (3, 256, 256) and a[0]["mask"].max() < 6
    small = Synthetic("train", image_size=(64, 96), num_classes=9)
    assert tuple(small[0]["mask"].shape) == (64, 96) and small.num_classes == 9 and len(small.palette) == 9
    start = time.perf_counter()
    for i in range(100):
        a.load(i % 40)
    per_image_ms = (time.perf_counter() - start) * 10
    assert per_image_ms < 15, per_image_ms  # ~3 ms on an idle core; slack for a loaded CI machine


def test_synthetic_augmentation_is_seeded_by_epoch_and_index():
    cfg = dict(type="Synthetic", train_pipeline=dict(scale=(256, 128), crop_size=(64, 64)),
               dataset_kwargs=dict(num_images=4, image_size=128))
    ds = build_dataset(cfg, "train")
    first = ds[2]
    assert tuple(first["image"].shape) == (3, 64, 64)
    assert torch.equal(build_dataset(cfg, "train")[2]["image"], first["image"])
    ds.set_epoch(1)
    again = ds[(2, 0)]  # (index, epoch) from a sampler wins over set_epoch
    assert torch.equal(again["image"], first["image"]) and not torch.equal(ds[2]["image"], first["image"])


def test_build_dataset_rejects_bad_config_with_the_key():
    base = dict(type="Synthetic")
    cases = {
        "unknown key 'bogus'": {**base, "bogus": 1},
        "data.type='Nope'": {"type": "Nope"},
        "data.train_pipeline: unknown key 'crop'": {**base, "train_pipeline": {"crop": 1}},
        "data.train_pipeline.crop_size=(0, 5)": {**base, "train_pipeline": {"crop_size": (0, 5)}},
        "data.test_pipeline.scale=512": {**base, "test_pipeline": {"scale": 512}},
        "data.train_pipeline.cat_max_ratio=1.5": {**base, "train_pipeline": {"cat_max_ratio": 1.5}},
        "data.batch_size=0": {**base, "batch_size": 0},
        "unknown key 'split_seed' for Synthetic": {**base, "dataset_kwargs": {"split_seed": 0}},
        "data.root missing": {"type": "ADE20K"},
    }
    for fragment, cfg in cases.items():
        with pytest.raises(ValueError, match=None) as err:
            build_dataset(cfg, "train")
        assert fragment in str(err.value), (fragment, str(err.value))
    with pytest.raises(ValueError, match="split 'training'"):
        build_dataset(base, "training")


def test_collate_pads_images_with_zero_and_masks_with_ignore():
    samples = [
        {"image": torch.full((3, 4, 5), 9, dtype=torch.uint8), "mask": torch.ones(2, 3, dtype=torch.int64),
         "path": "a", "orig_size": (2, 3)},
        {"image": torch.full((3, 6, 2), 7, dtype=torch.uint8), "mask": torch.zeros(6, 2, dtype=torch.int64),
         "path": "b", "orig_size": (6, 2)},
    ]
    batch = collate(samples)
    assert batch["image"].shape == (2, 3, 6, 5) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (2, 6, 3) and batch["mask"].dtype == torch.int64
    assert batch["image"][0, :, :4, :5].eq(9).all() and batch["image"][0, :, 4:].eq(0).all()
    assert batch["image"][1, :, :, 2:].eq(0).all()
    assert batch["mask"][0, :2, :3].eq(1).all() and batch["mask"][0, 2:].eq(255).all()
    assert batch["mask"][1, :, 2].eq(255).all() and batch["path"] == ["a", "b"]
    assert batch["orig_size"] == [(2, 3), (6, 2)]
