"""Transforms: alignment of image and mask, cat_max_ratio, ignore label, odd sizes, determinism."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustvit.data.transforms import (
    TestPipeline,
    TrainPipeline,
    pad_to,
    photometric_distortion,
    random_crop,
    random_flip,
    rescale_size,
    sample_rng,
)


def test_rescale_size_follows_mmcv_keep_ratio_box():
    assert rescale_size(512, 683, (2048, 512), True) == (512, 683)  # ADE_val_00000001 stays
    assert rescale_size(300, 400, (2048, 512), True) == (512, 683)  # short side -> 512
    assert rescale_size(100, 5000, (2048, 512), True) == (41, 2048)  # long side binds
    assert rescale_size(480, 640, (512, 512), False) == (512, 512)
    assert rescale_size(1, 4000, (64, 16), True) == (1, 64)  # never 0 pixels


def _position_pair(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Image whose G channel is x and B channel is y; mask = x % 200 (w <= 256)."""
    yy, xx = np.mgrid[:h, :w]
    image = np.stack([np.full((h, w), 7), xx, yy % 256], -1).astype(np.uint8)
    return image, (xx % 200).astype(np.uint8)


def test_crop_flip_pad_keep_image_and_mask_aligned():
    image, mask = _position_pair(200, 250)
    flips = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        im, m = random_crop(image, mask, (64, 96), 0.75, rng)
        im, m = random_flip(im, m, 0.5, rng)
        flips += bool(im[0, 0, 1] > im[0, -1, 1])
        im, m = pad_to(im, m, (80, 100))
        assert im.shape == (80, 100, 3) and m.shape == (80, 100)
        valid = m != 255
        assert valid.sum() == 64 * 96
        np.testing.assert_array_equal(m[valid], im[..., 1][valid] % 200)
        assert (im[~valid] == 0).all()
        # Rows and columns stay consecutive (a real crop, flipped or not).
        assert abs(int(im[0, 1, 1]) - int(im[0, 0, 1])) == 1 and int(im[1, 0, 2]) - int(im[0, 0, 2]) == 1
    assert 10 < flips < 30


def _block_pair(h: int, w: int, cell: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy // cell) * 7 + (xx // cell) * 3) % 11
    colours = np.random.default_rng(0).integers(0, 256, (256, 3)).astype(np.uint8)
    return colours[mask], mask.astype(np.uint8), colours


@settings(max_examples=25, deadline=None)
@given(h=st.integers(100, 300), w=st.integers(100, 300), seed=st.integers(0, 2**16))
def test_train_pipeline_keeps_alignment_through_resize(h, w, seed):
    image, mask, colours = _block_pair(h, w)
    pipe = TrainPipeline(scale=(256, 128), ratio_range=(0.5, 2.0), crop_size=(64, 64), photometric=False)
    im, m = pipe(image, mask, np.random.default_rng(seed))
    assert im.shape == (64, 64, 3) and m.shape == (64, 64)
    # Resize factors lie in [0.2, 2.6] here. Away from label edges (7x7 neighbourhood of one label, which
    # covers bilinear blending plus OpenCV's half-pixel nearest offset) colour == the label's colour.
    k = np.ones((7, 7), np.uint8)
    interior = (cv2.erode(m, k) == cv2.dilate(m, k)) & (m != 255)
    interior[:3], interior[-3:], interior[:, :3], interior[:, -3:] = False, False, False, False  # unseen edges
    assert interior.any()
    assert np.abs(im[interior].astype(int) - colours[m[interior]].astype(int)).max(initial=0) <= 1


def test_cat_max_ratio_holds_when_satisfiable():
    # 512x1024 mask, class 1 in columns [0, 600): about half of the 512x512 crops satisfy the 0.75 rule.
    mask = np.zeros((512, 1024), np.uint8)
    mask[:, :600] = 1
    image = np.zeros((512, 1024, 3), np.uint8)

    def max_share(ratio: float, seed: int) -> float:
        _, m = random_crop(image, mask, (512, 512), ratio, np.random.default_rng(seed))
        return np.bincount(m.ravel(), minlength=2).max() / m.size

    with_rule = [max_share(0.75, s) for s in range(100)]
    without = [max_share(1.0, s) for s in range(100)]
    assert sum(r < 0.75 for r in with_rule) >= 99  # fails only after 11 misses: p = 0.5^11 per crop
    assert 30 <= sum(r < 0.75 for r in without) <= 70


def test_cat_max_ratio_ignores_the_ignore_label():
    # 90% ignore and two classes at 50/50: every crop passes without retries, whatever the ignore share.
    mask = np.full((100, 100), 255, np.uint8)
    mask[:10, :50], mask[:10, 50:] = 3, 4
    image = np.zeros((100, 100, 3), np.uint8)
    _, m = random_crop(image, mask, (100, 100), 0.75, np.random.default_rng(0))
    np.testing.assert_array_equal(m, mask)


def test_image_smaller_than_crop_is_whole_image_padded():
    image, mask = _position_pair(100, 60)
    pipe = TrainPipeline(scale=(60, 100), ratio_range=None, keep_ratio=True, crop_size=(512, 512),
                         flip_prob=0.0, photometric=False)
    im, m = pipe(image, mask, np.random.default_rng(3))
    assert im.shape == (512, 512, 3) and m.shape == (512, 512)
    np.testing.assert_array_equal(im[:100, :60], image)
    np.testing.assert_array_equal(m[:100, :60], mask)
    assert (m[100:] == 255).all() and (m[:, 60:] == 255).all() and im[100:].max() == 0 and im[:, 60:].max() == 0


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), kind=st.sampled_from(["ignore", "one", "random"]),
       seed=st.integers(0, 2**16))
def test_pipeline_shapes_and_ignore_on_any_size(h, w, kind, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = {"ignore": np.full((h, w), 255, np.uint8), "one": np.full((h, w), 4, np.uint8),
            "random": rng.choice(np.array([0, 1, 2, 255], np.uint8), (h, w))}[kind]
    pipe = TrainPipeline(scale=(128, 32), ratio_range=(0.5, 2.0), crop_size=(32, 48))
    im, m = pipe(image, mask, rng)
    assert im.shape == (32, 48, 3) and im.dtype == np.uint8 and m.shape == (32, 48) and m.dtype == np.uint8
    assert set(np.unique(m)) <= set(np.unique(mask)) | {255}
    if kind == "ignore":
        assert (m == 255).all()
    if kind == "one":
        assert (m == 4).any()  # the resized image always keeps >= 1 pixel
    test_im, test_m = TestPipeline(scale=(128, 32), keep_ratio=True)(image, mask)
    assert test_m is mask and test_im.shape[:2] == rescale_size(h, w, (128, 32), True)


def test_photometric_distortion_on_grey_is_affine_and_deterministic():
    grey = np.full((8, 8, 3), 100, np.uint8)
    values = set()
    for seed in range(30):
        out = photometric_distortion(grey, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == grey.shape
        assert (out == out[0, 0, 0]).all()  # saturation and hue leave grey pixels grey
        assert (100 - 32) * 0.5 - 1 <= out[0, 0, 0] <= (100 + 32) * 1.5 + 1
        values.add(int(out[0, 0, 0]))
    assert len(values) > 10
    colour = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    a = photometric_distortion(colour, sample_rng(0, 1, 2))
    np.testing.assert_array_equal(a, photometric_distortion(colour, sample_rng(0, 1, 2)))
    changed = [not np.array_equal(colour, photometric_distortion(colour, np.random.default_rng(s))) for s in range(200)]
    assert 170 <= sum(changed) <= 198  # each op fires with p=0.5: all four skipped 1/16 of the time (~188)


def test_sample_rng_depends_on_seed_epoch_and_index():
    draw = lambda *k: sample_rng(*k).integers(0, 2**31, 4).tolist()  # noqa: E731
    assert draw(0, 0, 5) == draw(0, 0, 5)
    assert len({str(draw(0, 0, 5)), str(draw(0, 1, 5)), str(draw(0, 0, 6)), str(draw(1, 0, 5))}) == 4


@pytest.mark.parametrize("size", [(480, 640), (7, 3000)])
def test_test_pipeline_fixed_scale(size):
    image = np.zeros((*size, 3), np.uint8)
    mask = np.zeros(size, np.uint8)
    im, m = TestPipeline(scale=(512, 512), keep_ratio=False)(image, mask)
    assert im.shape == (512, 512, 3) and m.shape == size
