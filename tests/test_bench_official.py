"""``clustvit bench official`` without the official environment: our half for real, the worker protocol
against a stand-in process written here, and the real worker's protocol and oracle logic (it needs
only torch until it loads an official model)."""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from clustvit import loading
from clustvit.accel import accelerate
from clustvit.bench import common as bench
from clustvit.bench import official, official_worker
from clustvit.cli import command_parser, main
from clustvit.configs import load_config
from clustvit.models.losses import pseudo_labels

ROOT = Path(__file__).resolve().parents[1]
DEMO_VIT = str(ROOT / "config/demo/segmenter_vit-demo_synthetic.py")
DEMO_CLUST = str(ROOT / "config/demo/segmenter_clustvit-demo_synthetic.py")
SECONDS_PER_IMAGE = 0.25  # what the stand-in reports for each pass, per image

# Speaks the worker protocol; checks what the driver hands over and echoes facts about it.
STAND_IN = f'''
import json, sys, torch
state = {{}}
for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "load":
        if "{{fail}}" == "load":
            print(json.dumps({{"ok": False, "error": "KeyError: no such config"}}), flush=True)
            continue
        sd = torch.load(msg["checkpoint"], weights_only=True)["state_dict"]
        data = torch.load(msg["inputs"], weights_only=True)
        state["shapes"] = [tuple(b.shape) for b in data["batches"]]
        ids = data["cluster_ids"]
        info = {{"num_keys": len(sd), "official_names": sum(".layers." in k for k in sd),
                "our_names": sum(".blocks." in k for k in sd), "num_classes": msg["num_classes"],
                "threads": msg["threads"], "mean": data["mean"].tolist(),
                "id_rows": None if ids is None else sum(len(t) for t in ids),
                "id_sum": None if ids is None else int(sum(t.sum() for t in ids))}}
        print(json.dumps({{"ok": True, "info": info}}), flush=True)
    elif msg["cmd"] == "time":
        if "{{fail}}" == "time":
            print("Segmentation fault in the official kernel", file=sys.stderr)
            sys.exit(3)
        n = sum(s[0] for s in state["shapes"])
        print(json.dumps({{"ok": True, "seconds": {SECONDS_PER_IMAGE} * n}}), flush=True)
    elif msg["cmd"] == "predict":
        labels = [torch.zeros(s[0], s[2], s[3], dtype=torch.uint8) for s in state["shapes"]]
        torch.save({{"labels": labels}}, msg["out"])
        print(json.dumps({{"ok": True}}), flush=True)
    elif msg["cmd"] == "quit":
        print(json.dumps({{"ok": True}}), flush=True)
        break
'''


def _run(argv: list[str], worker_command: list[str]) -> dict:
    """``clustvit bench official ARGV``'s parsing and run, with a stand-in for the official worker."""
    return official.run(command_parser("bench").parse_args(["official", *argv]), worker_command=worker_command)


def _stand_in(tmp_path: Path, fail: str = "") -> list[str]:
    path = tmp_path / f"stand_in_{fail or 'ok'}.py"
    path.write_text(STAND_IN.replace("{fail}", fail))
    return [sys.executable, str(path)]


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--official-src", str(tmp_path), "--split", "test", "--limit", "2", "--repeats", "3", "--threads", "1",
            "--device", "cpu", "--work-dir", str(tmp_path / "out"), *extra]


def test_both_sides_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    res = _run(_args(tmp_path, "--oracle-clusters", "--pair", DEMO_VIT, "vit.py", "--pair", DEMO_CLUST, "cl.py"),
               worker_command=_stand_in(tmp_path))
    saved = json.loads((tmp_path / "out" / "bench_official.json").read_text())
    assert [r["name"] for r in saved["rows"]] == ["segmenter_vit-demo_synthetic", "segmenter_clustvit-demo_synthetic"]
    assert saved["num_images"] == 2 and saved["threads"] == 1 and saved["repeats"] == 3

    cfg = load_config(DEMO_CLUST)
    samples = bench.load_samples(cfg, None, "test", 2)
    masks = torch.stack([s.mask for s in samples])
    for row, config in zip(res["rows"], (DEMO_VIT, DEMO_CLUST), strict=True):
        info = row["official_info"]
        seg, _ = loading.load_model(config)
        # Every key arrives under its official name, none under ours; the normalisation is the model's.
        assert info["num_keys"] == len(seg.state_dict()) and info["our_names"] == 0 and info["official_names"] > 0
        assert info["num_classes"] == seg.num_classes and info["threads"] == 1
        assert info["mean"] == seg.mean.flatten().tolist()
        assert row["official"]["ms_per_img_median"] == pytest.approx(1000 * SECONDS_PER_IMAGE)
        assert len(row["ours"]["runs_s"]) == len(row["official"]["runs_s"]) == 3
        assert row["ratio"] == pytest.approx(row["ours"]["ms_per_img_median"] / (1000 * SECONDS_PER_IMAGE))
        assert row["paired_ratio"] == pytest.approx(
            statistics.median(s / (2 * SECONDS_PER_IMAGE) for s in row["ours"]["runs_s"]))
        # The stand-in predicts class 0 everywhere: agreement is our share of class-0 pixels.
        accelerate(seg, "cpu", None)
        ours = torch.cat([bench.infer(seg, s.image[None], s.mask[None], oracle=True).argmax(1) for s in samples])
        assert row["agreement_pct"] == pytest.approx(100.0 * float((ours == 0).float().mean()))
    vit, clust = (r["official_info"] for r in res["rows"])
    assert vit["id_rows"] is None  # no clusters, no oracle ids
    assert clust["id_rows"] == 2 and clust["id_sum"] == int(pseudo_labels(masks, 3).sum())
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3].split()[:3] == ["model", "official", "ms"]
    last = lines[-1].split()
    assert last[0] == "segmenter_clustvit-demo_synthetic" and float(last[1]) == 1000 * SECONDS_PER_IMAGE
    assert float(last[3]) == pytest.approx(res["rows"][1]["ratio"], abs=5e-4)


@pytest.mark.parametrize(("fail", "message"), [("load", "'load': KeyError: no such config"),
                                               ("time", "exited during 'time' (rc 3): 'Segmentation fault in the official kernel'")])
def test_worker_failures_are_one_line(tmp_path: Path, fail: str, message: str) -> None:
    with pytest.raises(official.OfficialError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        _run(_args(tmp_path, "--pair", DEMO_VIT, "vit.py"), worker_command=_stand_in(tmp_path, fail))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out" / "bench_official.json").exists()


def test_missing_official_checkout_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "official", "--official-src", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an official ClustViT checkout" in err[0]


def test_real_worker_is_a_standalone_script_beside_the_driver() -> None:
    """The driver starts the worker by path; it runs without clustvit (the official environment has none)."""
    assert official.WORKER == Path(official_worker.__file__).resolve() and official.WORKER.is_file()
    source = official.WORKER.read_text()
    assert "import clustvit" not in source and "from clustvit" not in source
    code = ("import runpy, sys; sys.modules['clustvit'] = None; sys.argv = ['w']; "  # importing clustvit would fail
            f"runpy.run_path({str(official.WORKER)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], input='{"cmd": "quit"}\n', capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"ok": True}


def test_real_worker_protocol_errors() -> None:
    worker = official_worker
    lines = ['{"cmd": "time"}', '{"cmd": "bogus"}', "not json", '{"cmd": "quit"}', '{"cmd": "time"}']
    out = io.StringIO()
    assert worker.serve(io.StringIO("\n".join(lines) + "\n"), out) == 0
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert replies[0] == {"ok": False, "error": "RuntimeError: no model loaded (send 'load' first)"}
    assert replies[1] == {"ok": False, "error": "ValueError: unknown command 'bogus'"}
    assert not replies[2]["ok"] and replies[2]["error"].startswith("JSONDecodeError")
    assert replies[3] == {"ok": True} and len(replies) == 4  # nothing answered after quit


def test_oracle_clusterer_runs_the_module_and_answers_the_ids() -> None:
    worker = official_worker
    torch.manual_seed(0)
    inner = nn.Linear(8, 4)
    rows = [torch.tensor([0, 3, 1, 2, 0]), torch.tensor([1, 1, 0, 0, 3]), torch.tensor([2, 0, 0, 0, 0])]
    calls = []
    inner.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape))
    oracle = worker.OracleClusterer(inner, 4, rows)
    first = oracle(torch.randn(2, 5, 8))  # rows 0 and 1
    second = oracle(torch.randn(1, 5, 8))  # row 2
    again = oracle(torch.randn(1, 5, 8))  # the rows are used up: a new pass starts at row 0
    assert calls == [(2, 5, 8), (1, 5, 8), (1, 5, 8)]
    assert torch.equal(first.argmax(-1), torch.stack(rows[:2])) and torch.equal(second.argmax(-1)[0], rows[2])
    assert torch.equal(again.argmax(-1)[0], rows[0])
    assert torch.equal(first.sum(-1), torch.ones(2, 5))  # one-hot
    with pytest.raises(ValueError, match="oracle cluster ids have shape"):
        worker.OracleClusterer(inner, 4, rows)(torch.randn(1, 6, 8))
