"""Fixtures shared by the training and reliability tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


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
