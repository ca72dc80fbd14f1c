"""Ours against the OFFICIAL ClustViT code: same images, weights, threads and allocator, one run.

    python tools/bench_official.py --official-src DIR [--official-python PY] [--pair OURS OFFICIAL ...]
                                   [--data-root ROOT --split S | --shape H W] [--limit N] [--oracle-clusters]
                                   [--threads T] [--repeats R] [--batch-size B] [--work-dir OUT]

DIR is an existing official checkout (DTU-PAS/clustvit) with its own Python environment, PY (default:
DIR/../venv/bin/python, the layout of the peer's ``setup.sh``). For each pair (default: Segmenter ViT-b
and ClustViT-b k3/ip3 on SUIM), our model is built with seeded random weights, those weights are
written as an official-format checkpoint (``to_official``), and ``tools/official_worker.py`` is started
under PY: it imports the official package from DIR, builds the official config with our class count,
and loads that checkpoint strictly. Both then time the same inputs (after our config's test pipeline),
alternating passes in the same order flip as ``tools/benchmark.py``, after one warm-up pass each; ours
runs in this process as every inference CLI runs it (``clustvit.accel.accelerate``, float32), the official
model through its own ``inference``. Both get ``--threads`` and our glibc malloc settings
(``clustvit.inference.runtime``; the worker through glibc's equivalent ``MALLOC_*_`` variables). With
``--oracle-clusters`` the official Cluster module's arg-max is replaced by the cluster ids our model
used (``official_worker.OracleClusterer``); the agreement column (share of pixels where both predict
the same label) shows both sides ran the same computation.

The table gives median ms per image for each side, their ratio (ours / official: below 1 means ours is
faster) and the median over repeats of the back-to-back ratio; ``--work-dir`` also gets
``bench_official.json`` and the worker's stderr (``official_worker_<config>.log``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from clustvit.accel import accelerate  # noqa: E402
from clustvit.atomic import write_json_atomic  # noqa: E402
from clustvit.bench import common as bench  # noqa: E402
from clustvit.convert.weights import to_official  # noqa: E402
from clustvit.inference import runtime  # noqa: E402

WORKER = ROOT / "tools" / "official_worker.py"
# Ours -> the official config of the same model (relative to the official checkout).
DEFAULT_PAIRS = [
    ("config/vit/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py",
     "config/vit/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py"),
    ("config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py",
     "config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py"),
]


class OfficialError(RuntimeError):
    """The official worker failed or broke the protocol; the message is one line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official-src", required=True, help="an official ClustViT checkout (DTU-PAS/clustvit)")
    p.add_argument("--official-python", help="the official environment's python (default: DIR/../venv/bin/python)")
    p.add_argument("--pair", nargs=2, action="append", metavar=("OURS", "OFFICIAL"),
                   help="our config and the official config (relative to --official-src) of one model; "
                        "repeatable (default: Segmenter ViT-b and ClustViT-b k3/ip3 on SUIM)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="timed passes per side (default 7)")
    p.add_argument("--threads", type=int, help="intra-op threads of both sides (default: torch's choice here)")
    p.add_argument("--work-dir", help="if given, bench_official.json is written there")
    bench.add_input_args(p)
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error(f"--device {args.device}: the official side runs on CPU only here; pass --device cpu")
    return args


class OfficialProcess:
    """The official worker as a subprocess: one JSON request per line in, one JSON reply per line out."""

    def __init__(self, command: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - kept open for the process's lifetime
        self.proc = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env)

    def request(self, **msg: object) -> dict:
        """Send one command; return its reply, or raise OfficialError with the worker's own message."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise OfficialError(f"official worker exited early (rc {self.proc.wait()}); see {self.log_path}") from None
        line = self.proc.stdout.readline()
        if not line:
            raise OfficialError(f"official worker exited during {msg.get('cmd')!r} (rc {self.proc.wait()}): "
                                f"{self.last_log_line()!r}; see {self.log_path}")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            raise OfficialError(f"official worker broke the protocol: {line.strip()[:200]!r}") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            err = reply.get("error", reply) if isinstance(reply, dict) else reply
            raise OfficialError(f"official worker, {msg.get('cmd')!r}: {err}")
        return reply

    def last_log_line(self) -> str:
        self._log.flush()
        lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request(cmd="quit")
                self.proc.wait(timeout=30)
            except (OfficialError, subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> OfficialProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def malloc_env() -> dict[str, str]:
    """glibc's environment form of :func:`clustvit.inference.runtime.tune_malloc` (empty where it would not apply)."""
    if not runtime.tune_malloc():  # also applies it here, for our side
        return {}
    return {"MALLOC_MMAP_THRESHOLD_": str(runtime.MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(runtime.TRIM_THRESHOLD),
            "MALLOC_TOP_PAD_": str(runtime.TOP_PAD)}


@torch.no_grad()
@torch.no_grad()
def our_labels(seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], oracle: bool) -> list[Tensor]:
    return [bench.infer(seg, images, masks, oracle).argmax(1).to(torch.uint8) for images, masks in batches]


def agreement_pct(ours: Sequence[Tensor], theirs: Sequence[Tensor]) -> float:
    """Share of pixels (in %) with the same label; both lists hold (B, H, W) label maps batch by batch."""
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs, strict=False)):
        raise OfficialError(f"official predictions {[tuple(t.shape) for t in theirs]} do not match ours "
                            f"{[tuple(t.shape) for t in ours]}")
    same = sum(int((a == b).sum()) for a, b in zip(ours, theirs, strict=True))
    return 100.0 * same / sum(a.numel() for a in ours)


def compare_pair(
    seg: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    worker: OfficialProcess,
    load_msg: dict,
    scratch: Path,
    oracle: bool,
    repeats: int,
) -> dict:
    """Time ``seg`` (already accelerated) and the official model in ``worker`` on the same batches.

    ``load_msg`` is the worker's "load" command (its inputs and checkpoint files already written).
    Returns both sides' :func:`bench.summarise_runs`, the ratios and the prediction agreement.
    """
    info = worker.request(cmd="load", **load_msg)["info"]
    n = sum(int(images.shape[0]) for images, _ in batches)

    def ours() -> float:
        return bench.run_pass(seg, batches, oracle, amp=False)

    def official() -> float:
        return float(worker.request(cmd="time")["seconds"])

    sides = {"ours": ours, "official": official}
    seconds: dict[str, list[float]] = {"ours": [], "official": []}
    for k in ("official", "ours"):  # warm-up
        sides[k]()
    for r in range(repeats):
        for k in ("official", "ours") if r % 2 == 0 else ("ours", "official"):
            seconds[k].append(sides[k]())
    out = scratch / "official_labels.pt"
    worker.request(cmd="predict", out=str(out))
    theirs = torch.load(out, map_location="cpu", weights_only=True)["labels"]
    agree = agreement_pct(our_labels(seg, batches, oracle), theirs)
    stats = {k: bench.summarise_runs(seconds[k], n) for k in seconds}
    ratio = stats["ours"]["ms_per_img_median"] / stats["official"]["ms_per_img_median"]
    paired = statistics.median(a / b for a, b in zip(seconds["ours"], seconds["official"], strict=True))
    return {"ours": stats["ours"], "official": stats["official"], "ratio": ratio, "paired_ratio": paired,
            "agreement_pct": agree, "official_info": info}


def write_inputs(path: Path, seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], oracle: bool) -> None:
    """The worker's inputs file: images, our normalisation and (oracle) our cluster ids."""
    ids = bench.oracle_ids(seg, batches) if oracle and bench.uses_clusters(seg) else None
    torch.save({"batches": [images for images, _ in batches], "mean": seg.mean.flatten().cpu(),
                "std": seg.std.flatten().cpu(), "cluster_ids": ids}, path)


def write_official_checkpoint(path: Path, seg: nn.Module) -> None:
    torch.save({"state_dict": to_official(seg.state_dict())}, path)


def run_pair(
    ours_config: str,
    official_config: str,
    worker_command: Sequence[str],
    official_src: str,
    args: argparse.Namespace,
    scratch: Path,
    env: dict[str, str] | None = None,
) -> dict:
    """One model on both sides; ``worker_command`` starts a process speaking the worker protocol."""
    seg, cfg = bench.load_model(ours_config, None, args.cfg_options, "cpu")  # seeded random weights
    samples = bench.inputs_from_args(cfg, args.shape, args.data_root, args.split, args.limit)
    batches = bench.make_batches(samples, args.batch_size)
    inputs, ckpt = scratch / "inputs.pt", scratch / "official_weights.pt"
    write_official_checkpoint(ckpt, seg)  # before accelerate: the plain parameters
    write_inputs(inputs, seg, batches, args.oracle_clusters)
    accelerate(seg, "cpu", None)
    load_msg = {"official_src": str(official_src), "config": official_config, "checkpoint": str(ckpt),
                "inputs": str(inputs), "num_classes": int(seg.num_classes), "threads": torch.get_num_threads()}
    log = Path(args.work_dir or scratch) / f"official_worker_{Path(ours_config).stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with OfficialProcess(worker_command, log, env) as worker:
        row = compare_pair(seg, batches, worker, load_msg, scratch, args.oracle_clusters, args.repeats)
    return {"name": Path(ours_config).stem, "ours_config": ours_config, "official_config": official_config, **row}


def format_table(rows: Sequence[dict]) -> list[str]:
    lines = [f"{'model':<62}{'official ms':>12}{'ours ms':>10}{'ours/official':>15}{'paired':>8}{'agree %':>9}"]
    for r in rows:
        lines.append(f"{r['name'][:61]:<62}{r['official']['ms_per_img_median']:>12.1f}"
                     f"{r['ours']['ms_per_img_median']:>10.1f}{r['ratio']:>15.3f}{r['paired_ratio']:>8.3f}"
                     f"{r['agreement_pct']:>9.2f}")
    return lines


def default_python(official_src: Path) -> Path:
    return official_src.resolve().parent / "venv" / "bin" / "python"


def main(argv: list[str] | None = None, worker_command: Sequence[str] | None = None) -> dict:
    """``worker_command`` replaces ``[PY, tools/official_worker.py]`` (tests use a stand-in)."""
    args = parse_args(argv)
    src = Path(args.official_src)
    if worker_command is None:
        if not (src / "dynseg" / "clustvit.py").is_file():
            raise SystemExit(f"--official-src {src}: not an official ClustViT checkout (no dynseg/clustvit.py)")
        py = Path(args.official_python) if args.official_python else default_python(src)
        if not py.is_file():
            raise SystemExit(f"--official-python {py}: not found (build the environment with the peer's setup.sh)")
        worker_command = [str(py), str(WORKER)]
    malloc = malloc_env()
    env = {**os.environ, **malloc}
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = args.pair or DEFAULT_PAIRS
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_official_") as tmp:
        for ours_config, official_config in pairs:
            scratch = Path(tmp) / Path(ours_config).stem
            scratch.mkdir()
            rows.append(run_pair(ours_config, official_config, worker_command, str(src), args, scratch, env))
    n = rows[0]["ours"]["num_images"]
    info = rows[0]["official_info"]
    print(f"{n} images, batch {args.batch_size}, {torch.get_num_threads()} threads, {args.repeats} repeats, "
          f"oracle clusters {args.oracle_clusters}, float32; official commit {info.get('commit')}, "
          f"torch {info.get('torch')} (ours {torch.__version__}); malloc tuned {bool(malloc)}; {bench.cpu_name()}")
    for line in format_table(rows):
        print(line)
    result = {"rows": rows, "num_images": n, "batch_size": args.batch_size, "dtype": "float32", "malloc_env": malloc,
              "official_src": str(src), "official_command": list(worker_command), **bench.run_info(args)}
    if args.work_dir:
        write_json_atomic(Path(args.work_dir) / "bench_official.json", result)
    return result


if __name__ == "__main__":
    from clustvit.cli import run

    run(main)
