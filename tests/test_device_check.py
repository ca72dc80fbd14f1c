"""``clustvit bench device`` runs end to end on CPU (``--smoke``: tiny models), so it cannot rot while no GPU
is around: the report's structure, every parity fixture checked and passed, every timing row filled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clustvit import parity
from clustvit.bench import device_check as dc
from clustvit.bench import device_run
from clustvit.cli import command_parser

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = Path(os.environ.get("CLUSTVIT_PARITY_FIXTURES", parity.default_folder()))
SUIM = SHARED / "data" / "samples" / "SUIM"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict, str]:
    if not parity.fixture_files(FIXTURES) or not (SUIM / "TEST").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"fixtures ({FIXTURES}) or SUIM samples ({SUIM}) missing")
        pytest.skip("fixtures or SUIM samples missing")
    out = tmp_path_factory.mktemp("device_check")
    proc = subprocess.run(  # its own process: DDP's process group, torch.compile's caches, TF32 switched off
        [sys.executable, "-m", "clustvit", "bench", "device", "--device", "cpu", "--smoke", "--out", str(out),
         "--fixtures", str(FIXTURES), "--data-root", str(SUIM)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    report = json.loads((out / "device_check.json").read_text())
    return proc, report, (out / "device_check.md").read_text()


def test_smoke_run_passes_and_checks_every_fixture(smoke: tuple) -> None:
    proc, report, _ = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {"device", "torch", "correctness", "timings"} <= set(report)
    assert report["device"]["type"] == "cpu" and report["torch"]["version"] == torch.__version__
    assert report["torch"]["tf32_matmul"] is False and report["errors"] == []
    for c in report["correctness"]:
        assert {"name", "passed", "max_error"} <= set(c) and c["passed"] is True, c
    files = [p.name for p in parity.fixture_files(FIXTURES)]
    checked = [c for c in report["correctness"] if c.get("fixture")]
    assert sorted(c["fixture"] for c in checked) == sorted(files)  # each file once, none left out
    for c in checked:
        assert c["comparisons"] and 0.0 <= c["max_error"] < 1e-3
        assert c["max_error"] == max(x["max_error"] for x in c["comparisons"])
    names = " | ".join(c["name"] for c in report["correctness"])
    for model in ("ViT-b", "ClustViT-b k3/ip3", "ClustViT-b k4/ip4"):
        assert f"batch invariance {model}" in names
    assert "GradScaler" in names and "DDP world size 1 (gloo)" in names
    assert report["training_paths"]["ddp"]["backend"] == "gloo"
    assert report["training_paths"]["fp16_gradscaler"]["steps_applied"] == 4


def test_smoke_timings_and_ratios(smoke: tuple) -> None:
    _, report, md = smoke
    rows = report["timings"]["inference"]
    modes = {(r["model"], r["mode"], r["batch"]) for r in rows}
    for model in ("ViT-b", "ClustViT-b k3/ip3", "ClustViT-b k4/ip4"):
        for mode in ("fp32 eager", "bf16 eager"):
            assert {(model, mode, 1), (model, mode, 4)} <= modes
    assert ("ClustViT-b k4/ip4", "bf16 compiled", 4) in modes
    flops = {n: f["gflops_mean"] for n, f in report["flops"].items()}
    assert flops["ClustViT-b k4/ip4"] < flops["ViT-b"]  # oracle clusters merge tokens of the SUIM masks
    for r in rows:
        assert r["img_s"] > 0 and r["iters"] == 2
        ratio = flops["ViT-b"] / flops[r["model"]]
        assert r["flop_ratio"] == pytest.approx(ratio)
        if r["mode"] == "bf16 compiled":  # the smoke run compiles ClustViT k4/ip4 alone: no ViT to compare with
            assert r["speedup"] is None and r["efficiency"] is None
            continue
        vit = next(v for v in rows if (v["model"], v["mode"], v["batch"]) == ("ViT-b", r["mode"], r["batch"]))
        assert r["speedup"] == pytest.approx(r["img_s"] / vit["img_s"])
        assert r["efficiency"] == pytest.approx(r["speedup"] / ratio)
    compiled = next(r for r in rows if r["mode"] == "bf16 compiled")
    assert compiled["graphs_compiled_while_timed"] in (0, None)  # the warm-up saw every shape
    train = {r["model"]: r for r in report["timings"]["train_step"]}
    assert set(train) == set(flops) and all(r["loss_finite"] and r["batch"] == 2 for r in train.values())
    assert "| ClustViT-b k4/ip4 | bf16 compiled | 4 |" in md and "## Training step" in md


def test_batch_invariance_counts_flipped_pixels() -> None:
    """The pixel count is real: moving one logit past its runner-up flips exactly that pixel."""
    alone = torch.zeros(1, 3, 2, 2)
    alone[0, 0] = 1.0  # class 0 wins everywhere by a margin of 1
    batched = alone.clone()
    batched[0, 2, 1, 1] = 2.0
    res = dc.compare_predictions(batched, alone)
    assert (res["passed"], res["pixels_differ"], res["max_error"], res["pixels"]) == (False, 1, 2.0, 4)
    assert res["pixels_at_float_ties"] == 1  # a 2.0 change can flip a margin of 1
    assert dc.compare_predictions(alone, alone.clone())["passed"]


@pytest.mark.skipif(not (FIXTURES / "vit_mini.pt").exists(), reason="no vit_mini fixture")
def test_failures_are_recorded_not_raised(tmp_path: Path) -> None:
    """A wrong fixture, a fixture of unknown structure and a crashing section each become a failed
    correctness entry in the JSON (with the error), and the run goes on."""
    tool = device_run
    folder = tmp_path / "fixtures"
    folder.mkdir()
    d = torch.load(FIXTURES / "vit_mini.pt", weights_only=True)
    d["outputs"]["outs"][0] = d["outputs"]["outs"][0] + 1e-3
    torch.save(d, folder / "vit_mini.pt")
    torch.save({"case": "mystery", "config": {"type": "Mystery"}}, folder / "mystery.pt")
    args = command_parser("bench").parse_args(["device", "--device", "cpu", "--smoke", "--out", str(tmp_path / "out"),
                                               "--fixtures", str(folder)])
    run = tool.Run(tool.fill_defaults(args), torch.device("cpu"))
    run.section("parity fixtures", lambda: tool.check_fixtures(run), correctness=True)
    run.section("crashing section", lambda: 1 / 0, correctness=True)
    report = json.loads((tmp_path / "out" / "device_check.json").read_text())
    by_name = {c["name"]: c for c in report["correctness"]}
    wrong = by_name["parity vit_mini.pt (accelerated fp32)"]
    assert not wrong["passed"] and wrong["max_error"] == pytest.approx(1e-3, rel=1e-2)
    assert len(wrong["failed"]) == 1 and wrong["failed"][0].startswith("vit_mini outs[0]")
    mystery = by_name["parity mystery.pt (accelerated fp32)"]
    assert not mystery["passed"] and "unknown fixture structure" in mystery["error"]
    crashed = by_name["crashing section (section crashed)"]
    assert not crashed["passed"] and crashed["error"] == "ZeroDivisionError: division by zero"
    assert [e["section"] for e in report["errors"]] == ["crashing section"]
    assert "**NO**" in (tmp_path / "out" / "device_check.md").read_text()
