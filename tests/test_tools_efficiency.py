"""``clustvit bench ...`` runs end to end on tiny configs, and what it prints and writes is right."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import converted_suim

from clustvit import loading
from clustvit.accel import cpu
from clustvit.bench import common as bench
from clustvit.bench import compare, kernels, report, timing
from clustvit.cli import command_parser, main
from clustvit.configs import load_config
from clustvit.models.losses import pseudo_labels

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
DEMO_VIT = str(ROOT / "config/demo/segmenter_vit-demo_synthetic.py")
DEMO_CLUST = str(ROOT / "config/demo/segmenter_clustvit-demo_synthetic.py")


SUBCOMMANDS = ["fps", "flops", "tokens", "compare", "official", "backends", "kernels", "profile", "report", "plot",
               "tables", "device"]


def _bench(*argv: str) -> None:
    """``clustvit bench ARGV`` in this process; it must succeed."""
    assert main(["bench", *argv]) == 0


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _last_line(capsys: pytest.CaptureFixture) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def _demo_vit_flops(h: int, w: int) -> float:
    """Closed form (matmuls, 2 x MACs) of the demo Segmenter ViT: width 96, 6 blocks, 1 head block, 6 classes."""
    c, n, k = 96, (h // 16) * (w // 16), 6

    def block(t: int) -> int:
        return 2 * (12 * t * c * c + 2 * t * t * c)

    head = 2 * n * c * c + block(n + k) + 2 * (n * c * c + k * c * c + n * c * k)
    return (2 * n * c * 3 * 256 + 6 * block(n + 1) + head) / 1e9


def test_get_flops_synthetic_shape(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bench("flops", DEMO_VIT, "--shape", "64", "96", "--work-dir", str(tmp_path))
    res = _json(tmp_path / "gflops.json")
    m = re.fullmatch(r"GFLOPs: (\d+\.\d\d) ± (\d+\.\d\d)", _last_line(capsys))
    assert m and float(m.group(2)) == 0.0
    closed = _demo_vit_flops(64, 96)
    # The count adds one FLOP per element of the residual adds (~0.1% here) to the matmul closed form.
    assert closed <= res["gflops_mean"] <= closed * 1.005
    assert float(m.group(1)) == pytest.approx(res["gflops_mean"], abs=0.005)
    assert res["num_images"] == 1
    assert (tmp_path / "gflops_hist.png").stat().st_size > 0


def test_get_flops_dataset_oracle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--split", "test", "--limit", "3", "--work-dir", str(tmp_path)]
    _bench("flops", DEMO_CLUST, "--oracle-clusters", *args)
    line = _last_line(capsys)
    res = _json(tmp_path / "gflops.json")
    per_image = res["per_image"]
    values = list(per_image.values())
    assert len(values) == 3
    assert line == f"GFLOPs: {np.mean(values):.2f} ± {np.std(values):.2f}"
    assert res["gflops_std"] > 0  # each image merges a different number of tokens
    assert max(values) < _demo_vit_flops(256, 256)  # merging saves FLOPs on these scenes


def test_get_fps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bench("fps", DEMO_VIT, "none", "--shape", "64", "64", "--repeat-times", "2", "--work-dir", str(tmp_path))
    saved = res = _json(tmp_path / "fps.json")
    assert len(saved["runs_s"]) == 2 and saved["num_images"] == 1
    assert saved["img_s_median"] == pytest.approx(np.median([1 / s for s in saved["runs_s"]]))
    m = re.fullmatch(r"img/s: median (\S+) mean (\S+) ± (\S+)", _last_line(capsys))
    assert m and float(m.group(1)) == pytest.approx(res["img_s_median"], abs=0.006)


def test_count_tokens_against_pseudo_labels(tmp_path: Path) -> None:
    _bench("tokens", DEMO_CLUST, "none", "--compare", DEMO_VIT, "--oracle-clusters", "--split", "test", "--limit", "2",
           "--work-dir", str(tmp_path))
    summary = _json(tmp_path / "tokens.json")
    tokens = np.load(tmp_path / "tokens.npz")
    vit = tokens["tokens_segmenter_vit-demo_synthetic"]
    clust = tokens["tokens_segmenter_clustvit-demo_synthetic"]
    assert (vit == 257).all() and vit.shape == (2, 6)  # 256x256 -> 16x16 tokens + cls
    cfg = load_config(DEMO_CLUST)
    masks = torch.stack([s.mask for s in bench.load_samples(cfg, None, "test", 2)])
    kept = (pseudo_labels(masks, 3).flatten(1) == 0).sum(1).numpy()
    assert (clust[:, :2] == 257).all()  # injection point 2
    assert (clust[:, 2:] == (1 + kept + 3)[:, None]).all()
    assert summary["segmenter_clustvit-demo_synthetic"]["total_mean"] == pytest.approx(clust.sum(1).mean())
    assert (tmp_path / "tokens_per_block.png").stat().st_size > 0


def test_benchmark_line_and_batching(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bench("compare", DEMO_VIT, DEMO_CLUST, "--split", "test", "--limit", "3", "--oracle-clusters",
           "--batch-size", "2", "--repeats", "3", "--work-dir", str(tmp_path))
    res = _json(tmp_path / "benchmark.json")
    out = capsys.readouterr().out.strip().splitlines()
    line = out[-1]
    m = re.fullmatch(r"a_img_s=(\S+) b_img_s=(\S+) flop_ratio=(\S+) speedup=(\S+) efficiency=(\S+)", line)
    assert m, line
    a, b, ratio, speedup, eff = map(float, m.groups())
    assert ratio == pytest.approx(res["gflops"]["A"][0] / res["gflops"]["B"][0], rel=1e-3)
    assert ratio > 1.0
    assert speedup == pytest.approx(b / a, rel=1e-3)
    assert eff == pytest.approx(speedup / ratio, rel=1e-3)
    assert res["fps"]["A"]["num_images"] == 3
    # The paired estimate: the median of the three back-to-back A/B time ratios (same images on both sides).
    ratios = sorted(ta / tb for ta, tb in zip(res["fps"]["A"]["runs_s"], res["fps"]["B"]["runs_s"], strict=True))
    assert res["paired_speedup"] == pytest.approx(ratios[1], rel=1e-9)
    assert res["paired_efficiency"] == pytest.approx(ratios[1] / res["flop_ratio"], rel=1e-9)
    assert out[-2].startswith("paired speedup") and f"{ratios[1]:.4f}" in out[-2]


def test_benchmark_plain_a_leaves_out_only_a_s_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A/B of the accelerated model against itself without one kernel, or all: two models, no switch.

    The demo models are too small for the tuner to time, so the kernels are pinned (CLUSTVIT_KERNELS)."""
    assert compare.PIECES == ("onednn_linear", "head_by_head_attention", "bmm_attention")  # what --plain-a offers
    monkeypatch.setenv("CLUSTVIT_KERNELS", "linear=onednn,attention=head_by_head")
    _bench("compare", DEMO_CLUST, DEMO_CLUST, "--split", "test", "--limit", "2", "--repeats", "1", "--plain-a", "all",
           "--work-dir", str(tmp_path / "all"))
    res = _json(tmp_path / "all" / "benchmark.json")
    linears = 35 if cpu.onednn_available() else 0
    assert res["kernels"] == {"A": dict.fromkeys(compare.PIECES, 0),
                              "B": {"onednn_linear": linears, "head_by_head_attention": 7, "bmm_attention": 0}}
    assert res["agreement_pct"] == 100.0  # same weights, same predictions whichever kernel
    assert res["flop_ratio"] == 1.0
    _bench("compare", DEMO_VIT, DEMO_VIT, "--shape", "256", "256", "--repeats", "1", "--amp",
           "--plain-a", "head_by_head_attention", "--work-dir", str(tmp_path / "one"))
    res = _json(tmp_path / "one" / "benchmark.json")
    assert res["kernels"]["A"]["head_by_head_attention"] == 0 and res["kernels"]["B"]["head_by_head_attention"] > 0
    assert res["kernels"]["A"]["onednn_linear"] == res["kernels"]["B"]["onednn_linear"]
    assert 90.0 < res["agreement_pct"] < 100.0  # 257 tokens: B's attention rounds its logits to bf16, A's does not


@pytest.mark.parametrize("config", [DEMO_CLUST, DEMO_VIT])
def test_profile_stages_splits_the_time_without_double_counting(tmp_path: Path, config: str) -> None:
    _bench("profile", config, "none", "--split", "test", "--limit", "2", "--repeat-times", "1", "--oracle-clusters",
           "--work-dir", str(tmp_path))
    ms = _json(tmp_path / "stages.json")["ms_per_image"]
    if config == DEMO_CLUST:  # demo ClustViT: 6 blocks, injection point 2
        assert list(ms)[:4] == ["blocks 0-1 (full sequence)", "Cluster module", "blocks 2-5 (merged sequence)",
                                "Regenerator"]
    else:
        assert list(ms)[0] == "blocks"
    assert list(ms)[-4:] == ["decode head", "backbone, other", "outside the model", "total"]
    # Every stage is timed once: nested or repeated hooks would push "backbone, other" below zero.
    assert all(v > 0 for v in ms.values()) and sum(ms.values()) == pytest.approx(2 * ms["total"])
    assert list(ms) == list(_json(tmp_path / "stages.json")["ms_per_image"])  # the written order is the table's


def test_batched_equals_batch_one() -> None:
    """ClustViT packs images of different kept lengths: a batch must give each image's batch-1 result."""
    seg, cfg = loading.load_model(DEMO_CLUST)
    samples = bench.load_samples(cfg, None, "test", 3)
    batched = torch.cat([bench.infer(seg, i, m, True) for i, m in bench.make_batches(samples, 3)])
    alone = torch.cat([bench.infer(seg, i, m, True) for i, m in bench.make_batches(samples, 1)])
    assert torch.allclose(batched, alone, atol=1e-4, rtol=1e-4)


def test_suim_samples_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The real SUIM samples (raw .bmp masks converted in a copy) through get_flops with oracle clusters."""
    root = converted_suim(tmp_path / "suim")
    cfg = tmp_path / "tiny_suim.py"
    cfg.write_text(
        f'_base_ = "{ROOT}/config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py"\n'
        "model = dict(backbone=dict(embed_dim=32, depth=4, num_heads=2, out_indices=(3,), cluster_mlp_size=32),\n"
        "             decode_head=dict(embed_dim=32, depth=1, num_heads=2))\n"
    )
    _bench("flops", str(cfg), "--data-root", str(root), "--oracle-clusters", "--limit", "3",
           "--work-dir", str(tmp_path / "wd"))
    res = _json(tmp_path / "wd" / "gflops.json")
    assert res["num_images"] == 3
    assert _last_line(capsys) == f"GFLOPs: {res['gflops_mean']:.2f} ± {res['gflops_std']:.2f}"
    assert res["gflops_std"] > 0


def test_bench_kernels_rows_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bench("kernels", "--tokens", "9", "17", "--dim", "32", "--heads", "4", "--repeats", "1", "--work-dir", str(tmp_path))
    rows = json.loads((tmp_path / "kernels.json").read_text())
    onednn = cpu.onednn_available()
    kernels_per_linear = 2 + onednn  # F.linear float32 and bf16, oneDNN float32 (where built)
    attention_kernels = 4 + onednn  # SDPA float32 and bf16, per head bf16 (and float32 on oneDNN), explicit
    assert len(rows) == 2 * (4 * kernels_per_linear + attention_kernels)
    assert [r["tokens"] for r in rows].count(17) == len(rows) // 2
    fc1 = next(r for r in rows if r["op"] == "linear fc1" and r["tokens"] == 9)
    assert fc1["gflop_s"] == pytest.approx(2 * 9 * 32 * 128 / fc1["ms"] / 1e6)
    # The printed table is the JSON's rows, in order: header, then one line per row.
    printed = capsys.readouterr().out.strip().splitlines()[-len(rows) - 1:]
    assert printed[0].split() == ["op", "tokens", "kernel", "ms", "GFLOP/s"]
    for line, r in zip(printed[1:], rows, strict=True):
        assert line.split() == [*r["op"].split(), str(r["tokens"]), *r["kernel"].split(), f"{r['ms']:.2f}",
                                f"{r['gflop_s']:.0f}"]
    q, k, v = torch.randn(3, 1, 2, 5, 8).unbind(0)
    torch.testing.assert_close(kernels.explicit_attention(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert main(["bench", "kernels", "--dim", "30", "--heads", "4"]) == 2
    assert capsys.readouterr().err.strip() == "error: --dim 30 is not divisible by --heads 4"


def test_bench_report_renders_every_kind_of_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Real tiny compare and kernels runs in one suite folder -> their Markdown rows."""
    suite = tmp_path / "suite"
    _bench("compare", DEMO_VIT, DEMO_CLUST, "--split", "test", "--limit", "2", "--repeats", "1", "--oracle-clusters",
           "--work-dir", str(suite / "demo_pair"))
    _bench("kernels", "--tokens", "9", "--dim", "32", "--heads", "4", "--repeats", "1", "--work-dir", str(suite / "kernels"))
    res = _json(suite / "demo_pair" / "benchmark.json")
    rows = json.loads((suite / "kernels" / "kernels.json").read_text())
    capsys.readouterr()
    _bench("report", str(suite))
    text = capsys.readouterr().out
    _bench("report", str(suite), "--out", str(tmp_path / "report.md"))
    assert (tmp_path / "report.md").read_text() == text
    pair = next(line for line in text.splitlines() if line.startswith("| `demo_pair`"))
    assert f"{res['efficiency']:.3f} ({res['paired_efficiency']:.3f})" in pair and f"{res['flop_ratio']:.3f}" in pair
    assert sum(line.startswith("| linear ") or line.startswith("| attention ") for line in text.splitlines()) == len(rows)
    assert "bench official" not in text  # no such run in the folder: no table
    assert main(["bench", "report", str(tmp_path)]) == 2  # runs sit two levels down here: none found
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"error: .*: no \*/benchmark.json", err[0])


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture) -> None:
    """``--help`` at every level, and every subcommand of the group is there."""
    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0
    listing = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", listing, re.M), name
        with pytest.raises(SystemExit) as done:
            main(["bench", name, "--help"])
        assert done.value.code == 0 and capsys.readouterr().out.startswith(f"usage: clustvit bench {name}")
    assert main(["bench"]) == 2  # the group without a subcommand: its help, and a usage status
    parser = command_parser("bench")
    assert parser.parse_args(["fps", DEMO_VIT, "none", "--repeat-times", "3"]).repeat_times == 3


def test_seed_shim_runs_as_a_script(tmp_path: Path) -> None:
    """The seed's command ``python tools/get_flops.py CONFIG --shape H W`` still works (a checkout, no install)."""
    proc = subprocess.run([sys.executable, "tools/get_flops.py", DEMO_VIT, "--shape", "64", "96", "--work-dir",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    saved = _json(tmp_path / "gflops.json")
    assert proc.stdout.strip().splitlines()[-1] == f"GFLOPs: {saved['gflops_mean']:.2f} ± {saved['gflops_std']:.2f}"
    closed = _demo_vit_flops(64, 96)
    assert closed <= saved["gflops_mean"] <= closed * 1.005


def test_one_timing_loop_and_one_table_renderer() -> None:
    """The timing loop's contract (warm-up calls untimed, one number per timed call, interleaving that flips
    its order) and the renderer's two layouts."""
    calls: list[str] = []
    seconds = timing.time_passes(lambda: calls.append("x"), repeats=3, warmup=2)
    assert len(calls) == 5 and len(seconds) == 3 and all(s >= 0 for s in seconds)
    order: list[str] = []
    res = timing.time_interleaved({k: (lambda k=k: order.append(k) or 1.0) for k in "AB"}, repeats=3, warmup=1)
    assert order == ["A", "B", "A", "B", "B", "A", "A", "B"] and res == {"A": [1.0] * 3, "B": [1.0] * 3}
    stats = timing.summarise_runs([2.0, 1.0, 4.0], 4)
    assert stats["img_s_median"] == 2.0 and stats["ms_per_img_median"] == 500.0
    assert report.markdown_table(["a", "b"], [["x", 1.5], ["y", None]]) == "| a | b |\n|---|---|\n| x | 1.5 |\n| y | – |"
    assert report.text_table(["name", "ms"], [["long name", "1.0"], ["n", "10.25"]]).splitlines() == [
        "name          ms", "long name    1.0", "n          10.25"]
    assert report.cell(False) == "**NO**" and report.cell(123456.7) == "123457"
