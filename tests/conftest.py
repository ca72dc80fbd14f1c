"""Fixtures shared by the training and reliability tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from clustvit.data.prep_suim import convert_suim

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SUIM_SAMPLES = SHARED / "data" / "samples" / "SUIM" / "TEST"
DEMO = REPO / "config" / "demo" / "segmenter_clustvit-demo_synthetic.py"
# --cfg-options that shrink the demo ClustViT to a few milliseconds per image (the prediction tests).
TINY_DEMO = [
    "model.backbone.embed_dim=32", "model.backbone.depth=2", "model.backbone.num_heads=2",
    "model.backbone.injection_point=1", "model.backbone.out_indices=[1]", "model.backbone.cluster_mlp_size=32",
    "model.decode_head.embed_dim=32", "model.decode_head.num_heads=2", "data.test_pipeline.scale=(96, 64)",
]


def need(path: Path) -> None:
    """Skip when shared sample data is missing locally; in CI (which has ../shared) that is a failure."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} missing")
        pytest.skip(f"{path} missing")


def converted_suim(root: Path) -> Path:
    """The shared SUIM test samples copied under ``root/TEST`` with their RGB masks converted to labels
    (``masks_label/``), as ``clustvit data suim`` leaves a real SUIM folder; returns ``root``."""
    need(SUIM_SAMPLES)
    shutil.copytree(SUIM_SAMPLES / "images", root / "TEST" / "images")
    (root / "TEST" / "masks").mkdir(parents=True)
    for bmp in (SUIM_SAMPLES / "masks").glob("*.bmp"):
        shutil.copy(bmp, root / "TEST" / "masks" / bmp.name)
    assert not convert_suim(root, progress=False).errors
    return root


def tiny_config(schedule: str) -> str:
    """The instant-test training config (width 32, depth 2, 64x64 synthetic images, ~50 ms per iteration)
    over the demo ClustViT, with the caller's ``schedule = dict(...)`` line."""
    return f'''_base_ = "{REPO}/config/demo/segmenter_clustvit-demo_synthetic.py"
model = dict(
    backbone=dict(img_size=(64, 64), embed_dim=32, depth=2, num_heads=2, out_indices=(1,), injection_point=1,
                  cluster_mlp_size=32),
    decode_head=dict(embed_dim=32, num_heads=2),
    test_cfg=dict(crop_size=(64, 64), stride=(64, 64)),
)
data = dict(train_pipeline=dict(scale=(64, 64), crop_size=(64, 64)), test_pipeline=dict(scale=(64, 64)),
            batch_size=2, num_workers=0, dataset_kwargs=dict(num_images=16, num_eval_images=4, image_size=64))
{schedule}
'''


@pytest.fixture(scope="session", autouse=True)
def private_kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The kernel tuner's cache (``clustvit.accel.tune``) in a folder of the test session's own, never the
    user's ``~/.cache``; subprocesses inherit it."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are dominated by per-op overhead, which extra threads only add to."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The requesting test module's ``TINY`` config text, written to a config file."""
    path = tmp_path_factory.mktemp("cfg") / "tiny.py"
    path.write_text(request.module.TINY)
    return path
