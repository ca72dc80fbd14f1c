"""``clustvit bench official``: ours against the OFFICIAL ClustViT code: same images, weights, threads and
allocator, one run.

``--official-src DIR`` is an existing official checkout (DTU-PAS/clustvit) with its own Python environment,
``--official-python PY`` (default: DIR/../venv/bin/python, the layout of the peer's ``setup.sh``). For each
pair (default: Segmenter ViT-b and ClustViT-b k3/ip3 on SUIM), our model is built with seeded random
weights, those weights are written as an official-format checkpoint (``to_official``), and
:data:`WORKER` (``official_worker.py``, beside this file) is started under PY: it imports the official
package from DIR, builds the official config with our class count, and loads that checkpoint strictly.
Both then time the same inputs (after our config's test pipeline), alternating passes
(``timing.time_interleaved``) after one warm-up pass each; ours runs in this process as every inference
CLI runs it (``clustvit.accel.accelerate``, float32), the official model through its own ``inference``.
Both get ``--threads`` and our glibc malloc settings (the worker through glibc's ``MALLOC_*_`` variables).
With ``--oracle-clusters`` the official Cluster module's arg-max is replaced by the cluster ids our model
used (``official_worker.OracleClusterer``); the agreement column (share of pixels where both predict the
same label) shows both sides ran the same computation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from clustvit import loading
from clustvit.accel import accelerate
from clustvit.atomic import write_json_atomic
from clustvit.bench import common as bench
from clustvit.bench.report import text_table
from clustvit.bench.timing import summarise_runs, time_interleaved, time_once
from clustvit.convert.weights import to_official
from clustvit.inference import runtime

WORKER = Path(__file__).resolve().with_name("official_worker.py")  # run by path: it imports no clustvit
# Ours -> the official config of the same model (relative to the official checkout).
DEFAULT_PAIRS = [
    ("config/vit/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py",
     "config/vit/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py"),
    ("config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py",
     "config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py"),
]


class OfficialError(RuntimeError):
    """The official worker failed or broke the protocol; the message is one line."""


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
def our_labels(seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], oracle: bool) -> list[Tensor]:
    """(B, H, W) uint8 arg-max labels of every (B, 3, H, W) image / (B, H, W) mask batch."""
    return [bench.infer(seg, images, masks, oracle).argmax(1).to(torch.uint8) for images, masks in batches]


def agreement_pct(ours: Sequence[Tensor], theirs: Sequence[Tensor]) -> float:
    """Share of pixels (in %) with the same label; both lists hold (B, H, W) label maps batch by batch."""
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs, strict=False)):
        raise OfficialError(f"official predictions {[tuple(t.shape) for t in theirs]} do not match ours "
                            f"{[tuple(t.shape) for t in ours]}")
    same = sum(int((a == b).sum()) for a, b in zip(ours, theirs, strict=True))
    return 100.0 * same / sum(a.numel() for a in ours)


def compare_pair(seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], worker: OfficialProcess, load_msg: dict,
                 scratch: Path, oracle: bool, repeats: int) -> dict:
    """Time ``seg`` (already accelerated) and the official model in ``worker`` on the same batches.

    ``load_msg`` is the worker's "load" command (its inputs and checkpoint files already written).
    Returns both sides' :func:`clustvit.bench.timing.summarise_runs`, the ratios and the prediction agreement.
    """
    info = worker.request(cmd="load", **load_msg)["info"]
    n = sum(int(images.shape[0]) for images, _ in batches)
    seconds = time_interleaved({
        "official": lambda: float(worker.request(cmd="time")["seconds"]),  # the worker's own clock
        "ours": lambda: time_once(lambda: bench.forward_pass(seg, batches, oracle, amp=False), bench.model_device(seg)),
    }, repeats)
    out = scratch / "official_labels.pt"
    worker.request(cmd="predict", out=str(out))
    theirs = torch.load(out, map_location="cpu", weights_only=True)["labels"]
    agree = agreement_pct(our_labels(seg, batches, oracle), theirs)
    stats = {k: summarise_runs(seconds[k], n) for k in ("ours", "official")}
    ratio = stats["ours"]["ms_per_img_median"] / stats["official"]["ms_per_img_median"]
    paired = statistics.median(a / b for a, b in zip(seconds["ours"], seconds["official"], strict=True))
    return {"ours": stats["ours"], "official": stats["official"], "ratio": ratio, "paired_ratio": paired,
            "agreement_pct": agree, "official_info": info}


def write_inputs(path: Path, seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], oracle: bool) -> None:
    """The worker's inputs file: images, our normalisation and (oracle) our cluster ids."""
    ids = bench.oracle_ids(seg, batches) if oracle and bench.uses_clusters(seg) else None
    torch.save({"batches": [images for images, _ in batches], "mean": seg.mean.flatten().cpu(),
                "std": seg.std.flatten().cpu(), "cluster_ids": ids}, path)


def run_pair(ours_config: str, official_config: str, worker_command: Sequence[str], official_src: str,
             args: argparse.Namespace, scratch: Path, env: dict[str, str] | None = None) -> dict:
    """One model on both sides; ``worker_command`` starts a process speaking the worker protocol."""
    seg, cfg = loading.load_model(ours_config, None, args.cfg_options, "cpu")  # seeded random weights
    samples = bench.inputs_from_args(cfg, args.shape, args.data_root, args.split, args.limit)
    batches = bench.make_batches(samples, args.batch_size)
    inputs, ckpt = scratch / "inputs.pt", scratch / "official_weights.pt"
    torch.save({"state_dict": to_official(seg.state_dict())}, ckpt)  # before accelerate: the plain parameters
    write_inputs(inputs, seg, batches, args.oracle_clusters)
    accelerate(seg, "cpu", None)
    load_msg = {"official_src": str(official_src), "config": official_config, "checkpoint": str(ckpt),
                "inputs": str(inputs), "num_classes": int(seg.num_classes), "threads": torch.get_num_threads()}
    log = Path(args.work_dir or scratch) / f"official_worker_{Path(ours_config).stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with OfficialProcess(worker_command, log, env) as worker:
        row = compare_pair(seg, batches, worker, load_msg, scratch, args.oracle_clusters, args.repeats)
    return {"name": Path(ours_config).stem, "ours_config": ours_config, "official_config": official_config, **row}


def format_table(rows: Sequence[dict]) -> str:
    """Median ms per image of each side, ours / official (and paired), agreement: one line per model."""
    return text_table(["model", "official ms", "ours ms", "ours/official", "paired", "agree %"],
                      [[r["name"], f"{r['official']['ms_per_img_median']:.1f}", f"{r['ours']['ms_per_img_median']:.1f}",
                        f"{r['ratio']:.3f}", f"{r['paired_ratio']:.3f}", f"{r['agreement_pct']:.2f}"] for r in rows])


def worker_command_for(official_src: Path, official_python: str | None) -> list[str]:
    """``[PY, WORKER]`` for an official checkout; FileNotFoundError if it or its python is missing."""
    if not (official_src / "dynseg" / "clustvit.py").is_file():
        raise FileNotFoundError(f"--official-src {official_src}: not an official ClustViT checkout (no dynseg/clustvit.py)")
    py = Path(official_python) if official_python else official_src.resolve().parent / "venv" / "bin" / "python"
    if not py.is_file():
        raise FileNotFoundError(f"--official-python {py}: not found (build the environment with the peer's setup.sh)")
    return [str(py), str(WORKER)]


def run(args: argparse.Namespace, worker_command: Sequence[str] | None = None) -> dict:
    """Every pair on both sides; print the table; ``--work-dir``: ``bench_official.json`` and the worker logs.

    ``worker_command`` replaces ``[PY, WORKER]`` (tests use a stand-in speaking the protocol)."""
    if args.device != "cpu":
        raise ValueError(f"--device {args.device}: the official side runs on CPU only here; pass --device cpu")
    src = Path(args.official_src)
    if worker_command is None:
        worker_command = worker_command_for(src, args.official_python)
    malloc = malloc_env()
    env = {**os.environ, **malloc}
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_official_") as tmp:
        for ours_config, official_config in args.pair or DEFAULT_PAIRS:
            scratch = Path(tmp) / Path(ours_config).stem
            scratch.mkdir()
            rows.append(run_pair(ours_config, official_config, worker_command, str(src), args, scratch, env))
    n = rows[0]["ours"]["num_images"]
    info = rows[0]["official_info"]
    print(f"{n} images, batch {args.batch_size}, {torch.get_num_threads()} threads, {args.repeats} repeats, "
          f"oracle clusters {args.oracle_clusters}, float32; official commit {info.get('commit')}, "
          f"torch {info.get('torch')} (ours {torch.__version__}); malloc tuned {bool(malloc)}; {bench.cpu_name()}")
    print(format_table(rows))
    result = {"rows": rows, "num_images": n, "batch_size": args.batch_size, "dtype": "float32", "malloc_env": malloc,
              "official_src": str(src), "official_command": list(worker_command), **bench.run_info(args)}
    if args.work_dir:
        write_json_atomic(Path(args.work_dir) / "bench_official.json", result)
    return result
