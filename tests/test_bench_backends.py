"""``clustvit bench backends`` on a tiny ClustViT: eager, ours and onnxruntime on a graph exported with the
oracle cluster ids as an input (torch.compile and OpenVINO are left to the real runs: minutes to compile,
an optional package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from clustvit import loading
from clustvit.bench import common as bench
from clustvit.cli import main

TINY = tiny_config("schedule = dict(max_iters=1)")


@pytest.mark.skipif(not hasattr(torch.compiler, "is_exporting"), reason="ONNX export needs torch >= 2.7")
def test_backends_agree_on_oracle_clusters(tiny: Path, tmp_path: Path, one_thread: None,
                                          capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("onnxruntime")
    assert main(["bench", "backends", "--config", str(tiny), "--backends", "eager", "ours", "ort", "--split", "test",
                 "--limit", "2", "--oracle-clusters", "--repeats", "2", "--device", "cpu", "--work-dir",
                 str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "bench_backends.json").read_text())
    (model,) = saved["models"]
    assert model["oracle_ids_in_graph"] and model["num_images"] == 2 and model["shape"] == [64, 64]
    assert (tmp_path / "tiny.onnx").stat().st_size > 0
    rows = model["rows"]
    assert list(rows) == ["eager", "ours", "ort"]
    for name, row in rows.items():
        assert len(row["runs_s"]) == 2, name
        # The same weights and the same merged tokens (the ids are a graph input): the same labels.
        assert row["agreement_pct"] == 100.0, name
        assert row["gain_vs_eager"] == pytest.approx(rows["eager"]["ms_per_img_median"] / row["ms_per_img_median"])
    assert rows["ort"]["fixed_graph"] == "1x3x64x64"
    # The oracle ids are what merging uses: with them the tiny model merges tokens on these scenes.
    seg, cfg = loading.load_model(str(tiny))
    sample = bench.load_samples(cfg, None, "test", 1)[0]
    tokens = bench.collect_tokens(seg, [(sample.image[None], sample.mask[None])], oracle=True)
    assert tokens[0, -1] < tokens[0, 0]
    table = capsys.readouterr().out.strip().splitlines()[-3:]
    assert [line.split()[1] for line in table] == ["eager", "ours", "ort"]
    assert [float(line.split()[-1]) for line in table] == [100.0, 100.0, 100.0]  # the agreement column


def test_multi_window_inputs_are_refused(tiny: Path, one_thread: None, capsys: pytest.CaptureFixture) -> None:
    """An input the graph cannot take (several sliding windows) is refused in one line before any timing."""
    assert main(["bench", "backends", "--config", str(tiny), "--backends", "eager", "--shape", "96", "96", "--repeats",
                 "1", "--device", "cpu", "--cfg-options", "model.test_cfg.mode=slide"]) == 2
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "need several sliding windows" in err[0]
    assert "ms/img" not in captured.out  # refused before any timing
