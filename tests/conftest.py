"""Fixtures shared by the training and reliability tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


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
