"""Instant runs of the real `clustvit train` / `clustvit test` (and the seed's train.py): tiny models (width 32, depth 2), 64x64 images, few iterations.

Covers: train then test on synthetic data and on the shared SUIM samples; 2N iterations straight ==
N + resume + N bit for bit; SIGKILL at a random moment then resume == uninterrupted; non-finite
loss handling; torchrun with 2 gloo processes == 1 process with the same global batch.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from PIL import Image

from clustvit import cli
from clustvit.configs import load_config
from clustvit.data.prep_suim import convert_suim
from clustvit.engine.trainer import NonFiniteLossError, PretrainedUnavailableError, train

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
SUIM_SAMPLES = SHARED / "data/samples/SUIM"
TINY = tiny_config("schedule = dict(max_iters=6, warmup_iters=0, log_interval=1, checkpoint_interval=3)")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # same thread count as the in-process runs: same float sums


pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures `one_thread`, `tiny`: conftest.py


def _losses(work: Path) -> list[dict]:
    """log.jsonl without the wall-clock fields."""
    rows = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "img_s"} for r in rows]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"differ: {bad[:5]}"


def test_instant_train_then_test(tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "run"  # the seed's `python train.py CONFIG ...`, as a real process: the shim works
    r = subprocess.run([sys.executable, "train.py", str(tiny), "--work-dir", str(work), "--cfg-options",
                        "schedule.max_iters=4"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "eta" in r.stdout and "tokens_kept" in r.stdout
    rows = _losses(work)
    assert [row["iter"] for row in rows] == [1, 2, 3, 4]
    assert {"loss", "loss_seg", "loss_clust", "lr", "tokens_kept"} <= rows[0].keys()
    assert rows[0]["lr"] == pytest.approx(2e-3)  # the demo's AdamW lr at step 0 (no warm-up here)
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_3.pth", "iter_4.pth"]
    assert json.loads((work / "config.json").read_text())["schedule"]["max_iters"] == 4
    assert list((work / "tb").glob("events.out.tfevents.*"))
    capsys.readouterr()
    assert cli.main(["test", str(tiny), str(work / "iter_4.pth"), "--work-dir", str(tmp_path / "eval"),
                     "--show-dir", str(tmp_path / "show"), "--out", str(tmp_path / "out")]) == 0
    stdout = capsys.readouterr().out
    res = json.loads((tmp_path / "eval/results.json").read_text())
    assert len(res["IoU"]) == 6 and 0 <= res["mIoU"] <= 100 and res["num_images"] == 4
    assert {"aAcc", "mAcc", "recall_small", "recall_huge", "tokens_kept"} <= res.keys()
    assert "mIoU" in stdout and "| sky" in stdout
    panels = sorted((tmp_path / "show").glob("*.png"))
    assert len(panels) == 4 and Image.open(panels[0]).size == (3 * 64, 64)
    labels = sorted((tmp_path / "out").glob("*.png"))
    assert len(labels) == 4 and Image.open(labels[0]).mode == "L"


def test_instant_suim_samples(tmp_path: Path, tiny: Path) -> None:
    if not SUIM_SAMPLES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SUIM_SAMPLES} missing")
        pytest.skip(f"{SUIM_SAMPLES} missing")
    root = tmp_path / "suim"
    for split in ("train_val", "TEST"):  # the 5 shared test images serve as both splits
        shutil.copytree(SUIM_SAMPLES / "TEST", root / split)
    report = convert_suim(root, progress=False)
    assert not report.errors
    leaf = tmp_path / "suim_tiny.py"
    leaf.write_text(f'_base_ = "{tiny}"\nmodel = dict(num_classes=8)\n'
                    f'data = dict(type="SUIM", root="{root}", dataset_kwargs=dict(_delete_=True))\n')
    assert cli.main(["train", str(leaf), "--work-dir", str(tmp_path / "w"), "--no-tensorboard",
                     "--cfg-options", "schedule.max_iters=3"]) == 0
    assert cli.main(["test", str(leaf), str(tmp_path / "w/iter_3.pth"), "--work-dir", str(tmp_path / "e")]) == 0
    res = json.loads((tmp_path / "e/results.json").read_text())
    assert res["classes"][0] == "waterbody" or len(res["classes"]) == 8
    assert res["num_images"] == 5 and len(res["IoU"]) == 8


def test_resume_is_bit_identical(tmp_path: Path, tiny: Path) -> None:
    cfg = load_config(tiny, ["data.num_workers=1"])  # a loader worker must not change the data order
    work = tmp_path / "w"
    train(cfg, work, tensorboard=False)  # 6 iterations, checkpoints at 3 and 6
    straight, straight_log = _weights(work / "iter_6.pth"), _losses(work)
    straight_opt = torch.load(work / "iter_6.pth", weights_only=True)["optimizer"]
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run.*--resume"):
        train(cfg, work, tensorboard=False)  # starting over in a used work dir would mix two runs
    (work / "iter_6.pth").unlink()  # as if the run had stopped after iteration 3
    train(cfg, work, resume=True, tensorboard=False)
    _assert_same(straight, _weights(work / "iter_6.pth"))
    resumed_opt = torch.load(work / "iter_6.pth", weights_only=True)["optimizer"]
    for k, s in straight_opt["state"].items():
        for name, t in s.items():
            assert torch.equal(torch.as_tensor(t), torch.as_tensor(resumed_opt["state"][k][name]))
    assert _losses(work) == straight_log  # iterations 4-6 logged once, with the same values


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, tiny: Path) -> None:
    opts = ["schedule.max_iters=24", "schedule.checkpoint_interval=1"]  # a checkpoint write every step
    ref = tmp_path / "ref"
    train(load_config(tiny, opts), ref, tensorboard=False)
    work = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "clustvit", "train", str(tiny), "--work-dir", str(work),
                             "--no-tensorboard", "--cfg-options", *opts], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    target = random.Random(os.getpid()).randint(3, 14)  # kill somewhere after iteration `target` completes
    while not (work / f"iter_{target}.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "iter_24.pth").exists(), "the run finished before it could be killed"
    assert cli.main(["train", str(tiny), "--work-dir", str(work), "--resume", "--no-tensorboard",
                     "--cfg-options", *opts]) == 0
    _assert_same(_weights(ref / "iter_24.pth"), _weights(work / "iter_24.pth"))
    assert _losses(work) == _losses(ref)
    assert not list(work.glob(".*tmp")) and len(list(work.glob("iter_*.pth"))) == 3  # keep last 3


def test_nonfinite_loss_stops_or_skips(tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture) -> None:
    # SGD at lr 1e4 blows the weights up: loss ~1e10 at iteration 2, NaN at iteration 3.
    opts = ["optimizer._delete_=True", "optimizer.type=SGD", "optimizer.lr=1e4", "schedule.min_lr=1e4",
            "schedule.checkpoint_interval=2", "schedule.max_iters=8"]
    work = tmp_path / "stop"
    with pytest.raises(NonFiniteLossError, match=r"iteration 3: non-finite loss loss_\w+ = nan.*iter_2\.pth"):
        train(load_config(tiny, opts), work, tensorboard=False)
    assert [p.name for p in work.glob("iter_*.pth")] == ["iter_2.pth"]  # the last good one, nothing after
    assert cli.main(["train", str(tiny), "--work-dir", str(tmp_path / "cli"), "--no-tensorboard",
                     "--cfg-options", *opts]) == 3
    assert "iteration 3: non-finite loss" in capsys.readouterr().err
    skip = tmp_path / "skip"
    out = train(load_config(tiny, [*opts, "runtime.skip_nonfinite=True"]), skip, tensorboard=False)
    assert out["skipped_steps"] >= 1 and (skip / "iter_8.pth").exists()
    assert torch.load(skip / "iter_8.pth", weights_only=True)["skipped_steps"] == out["skipped_steps"]
    assert _losses(skip)[-1]["skipped_steps"] == out["skipped_steps"]


def test_torchrun_two_processes_match_one(tmp_path: Path, tiny: Path) -> None:
    # SGD: its update is linear in the gradient, so float-rounding differences stay at rounding level.
    opts = ["optimizer._delete_=True", "optimizer.type=SGD", "optimizer.lr=0.05", "optimizer.momentum=0.9",
            "schedule.max_iters=4", "schedule.checkpoint_interval=4"]
    single = tmp_path / "one"
    train(load_config(tiny, [*opts, "data.batch_size=4"]), single, tensorboard=False)
    ddp = tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "clustvit", "train", str(tiny), "--work-dir", str(ddp), "--no-tensorboard",
                        "--cfg-options", *opts, "data.batch_size=2"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = _weights(single / "iter_4.pth"), _weights(ddp / "iter_4.pth")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)
    la, lb = _losses(single), _losses(ddp)
    assert [r["iter"] for r in la] == [r["iter"] for r in lb]
    for ra, rb in zip(la, lb):  # the logged loss is the mean over ranks = the single-process batch mean
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4)


def test_amp_bf16_and_pretrained_fallback(tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture) -> None:
    missing = str(tmp_path / "absent_vit.pth")
    out = train(load_config(tiny, ["schedule.max_iters=2", f"model.pretrained='{missing}'"]), tmp_path / "amp",
                amp=True, tensorboard=False)
    assert out["checkpoint"].endswith("iter_2.pth")
    assert "WARNING: model.pretrained: cannot load" in capsys.readouterr().err  # warned, trained anyway
    rows = _losses(tmp_path / "amp")
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    with pytest.raises(PretrainedUnavailableError, match="absent_vit.pth"):
        train(load_config(tiny, [f"model.pretrained='{missing}'", "runtime.require_pretrained=True"]),
              tmp_path / "req", tensorboard=False)
