"""Parity with the official implementation: every fixture file, dispatched on structure, never on name.

Folder: $CLUSTVIT_PARITY_FIXTURES (default ../shared/fixtures/reference). Missing folder: skip locally,
fail under CI. The comparisons and their tolerances (the fixture README's contract) live in
``clustvit.parity``, which ``tools/device_check.py`` runs on a GPU too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from clustvit import parity
from clustvit.convert.official import segmentor_from_official
from clustvit.convert.weights import load_checkpoint

FOLDER = Path(os.environ.get("CLUSTVIT_PARITY_FIXTURES", parity.default_folder()))
FILES = parity.fixture_files(FOLDER)


def assert_all_passed(checks: list[parity.Comparison]) -> None:
    assert checks, "nothing was compared"
    failed = [c.describe() for c in checks if not c.passed]
    assert not failed, "; ".join(failed)


def test_fixture_folder_present():
    if not FILES:
        if os.environ.get("CI"):
            pytest.fail(f"parity fixtures missing: {FOLDER}")
        pytest.skip(f"parity fixtures missing: {FOLDER}")


@pytest.mark.parametrize("form", ["plain", "accelerated"])
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_fixture(path: Path, form: str):
    """Every fixture, on the plain model and on the accelerated one (``clustvit.accel``)."""
    torch.manual_seed(0)
    assert_all_passed(parity.check_file(torch.load(path, weights_only=True), "cpu", form == "accelerated"))


def test_unknown_fixture_fails():
    """A file of unknown structure must fail the suite, not pass it."""
    with pytest.raises(parity.FixtureError, match="unknown fixture structure.*'Mystery'"):
        parity.check_file({"case": "x", "config": {"type": "Mystery"}})


@pytest.mark.skipif(not (FOLDER / "vit_mini.pt").exists(), reason="no vit_mini fixture")
def test_a_wrong_output_is_reported_with_its_error():
    """A reference output moved by 1e-3 fails exactly that comparison, and its error is recorded."""
    d = torch.load(FOLDER / "vit_mini.pt", weights_only=True)
    d["outputs"]["outs"][1] = d["outputs"]["outs"][1] + 1e-3
    checks = parity.check_file(d)
    failed = [c for c in checks if not c.passed]
    assert [c.name for c in failed] == ["vit_mini outs[1]"]
    assert failed[0].max_error == pytest.approx(1e-3, rel=1e-2) and failed[0].ratio > 1
    summary = parity.summarise(checks)
    assert not summary["passed"] and summary["worst"].startswith("vit_mini outs[1]")
    assert summary["max_error"] == failed[0].max_error


@pytest.mark.skipif(not (FOLDER / "segmenter_clustvit_mini.pt").exists(), reason="no segmentor fixture")
def test_official_checkpoint_file_loads(tmp_path: Path):
    """A segmentor fixture saved as an mmseg checkpoint ({'meta', 'state_dict'}) loads through load_checkpoint."""
    d = torch.load(FOLDER / "segmenter_clustvit_mini.pt", weights_only=True)
    path = tmp_path / "iter_160000.pth"
    torch.save({"meta": {"iter": 160000}, "state_dict": d["state_dict"]}, path)
    seg = segmentor_from_official(d["config"]).eval()
    load_checkpoint(seg, path)
    with torch.no_grad():
        logits = seg.decode_head(seg.backbone(d["inputs"]).features)
    rec = parity.Recorder(torch.device("cpu"), accelerated=False)
    rec.close(logits, d["outputs"]["seg_logits"], "seg_logits via load_checkpoint", parity.LOGITS)
    assert_all_passed(rec.items)
