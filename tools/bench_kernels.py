"""GFLOP/s of the kernels a ViT-B forward spends its time in, on this machine, for each kernel choice.

    python tools/bench_kernels.py [--tokens 1025 222] [--dim 768] [--heads 12] [--threads 2]
                                  [--repeats 9] [--work-dir DIR]

Rows: the four linear shapes of a block (qkv, proj, fc1, fc2) through PyTorch's default float32 path
(``F.linear``: the BLAS, MKL in the PyPI wheels), through oneDNN's inner product (what
``clustvit.accel.cpu.OneDNNLinear`` runs) and in bfloat16; then fused attention (SDPA) in float32 and
bfloat16, attention head by head (``clustvit.accel.cpu.per_head_attention``, what accelerated inference
runs in ``PER_HEAD_RANGE``), and the explicit float32 form (q k^T, softmax, @ v: what the official
implementation runs). 1025 tokens is a full 512² ViT sequence, 222 a typical merged ClustViT one.
Each cell is the median of ``--repeats`` calls; docs/BENCHMARKS.md shows a run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clustvit.accel import cpu as fast  # noqa: E402
from clustvit.atomic import write_json_atomic  # noqa: E402
from clustvit.cli import run  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[1025, 222], help="sequence lengths")
    p.add_argument("--dim", type=int, default=768, help="embedding width (ViT-B: 768)")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--work-dir", help="if given, kernels.json is written there")
    return p.parse_args(argv)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in ms, after two untimed calls."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def linear_kernels(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """The ways to run ``x @ w.T + b``: PyTorch's default float32 path (the BLAS), oneDNN's inner product
    in float32 (``clustvit.accel.cpu.OneDNNLinear``, where this build has it), and bfloat16 ``F.linear``."""
    kernels: dict[str, Callable[[], torch.Tensor]] = {"float32 F.linear": lambda: F.linear(x, w, b)}
    if fast.onednn_available():
        kernels["float32 oneDNN"] = lambda: fast.onednn_linear(x, w, b)
    xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
    kernels["bfloat16 F.linear"] = lambda: F.linear(xb, wb, bb)
    return kernels


def linear_rows(tokens: int, dim: int, repeats: int) -> list[dict]:
    """One row per (layer, kernel): the block's four linear layers on a (1, tokens, in) input."""
    rows = []
    shapes = {"qkv": (dim, 3 * dim), "proj": (dim, dim), "fc1": (dim, 4 * dim), "fc2": (4 * dim, dim)}
    gen = torch.Generator().manual_seed(0)
    for layer, (c_in, c_out) in shapes.items():
        x = torch.randn(1, tokens, c_in, generator=gen)
        w, b = torch.randn(c_out, c_in, generator=gen) * c_in**-0.5, torch.zeros(c_out)
        flops = 2 * tokens * c_in * c_out
        for name, fn in linear_kernels(x, w, b).items():
            ms = median_ms(fn, repeats)
            rows.append(dict(op=f"linear {layer}", tokens=tokens, kernel=name, ms=ms, gflop_s=flops / ms / 1e6))
    return rows


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with a materialised attention map, as the official code computes it."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, h, L, L)
    return attn.softmax(-1) @ v


def attention_rows(tokens: int, dim: int, heads: int, repeats: int) -> list[dict]:
    """Fused SDPA on (1, heads, tokens, dim/heads) q, k, v in float32 and bfloat16, float32 and bfloat16
    head by head, and the explicit float32 form (the official implementation's)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, dim // heads, generator=gen) for _ in range(3))
    flops = 4 * heads * tokens * tokens * (dim // heads)  # QK^T and AV, 2 FLOPs per multiply-add
    rows = []
    for name, dtype in (("float32 SDPA", torch.float32), ("bfloat16 SDPA", torch.bfloat16)):
        qd, kd, vd = q.to(dtype), k.to(dtype), v.to(dtype)
        ms = median_ms(lambda: F.scaled_dot_product_attention(qd, kd, vd), repeats)  # noqa: B023
        rows.append(dict(op="attention", tokens=tokens, kernel=name, ms=ms, gflop_s=flops / ms / 1e6))
    if fast.onednn_available():  # float32 head by head runs on oneDNN's matmul
        ms = median_ms(lambda: fast.per_head_attention(q, k, v), repeats)
        rows.append(dict(op="attention", tokens=tokens, kernel="float32 per head", ms=ms, gflop_s=flops / ms / 1e6))
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    ms = median_ms(lambda: fast.per_head_attention(qb, kb, vb), repeats)
    rows.append(dict(op="attention", tokens=tokens, kernel="bfloat16 per head", ms=ms, gflop_s=flops / ms / 1e6))
    ms = median_ms(lambda: explicit_attention(q, k, v), repeats)
    rows.append(dict(op="attention", tokens=tokens, kernel="float32 bmm+softmax", ms=ms, gflop_s=flops / ms / 1e6))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dim % args.heads:
        raise ValueError(f"--dim {args.dim} is not divisible by --heads {args.heads}")
    rows = []
    with torch.no_grad():
        for tokens in args.tokens:
            rows += linear_rows(tokens, args.dim, args.repeats)
            rows += attention_rows(tokens, args.dim, args.heads, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, dim {args.dim}, {args.heads} heads")
    print(f"{'op':<14} {'tokens':>6}  {'kernel':<24} {'ms':>8} {'GFLOP/s':>8}")
    for r in rows:
        print(f"{r['op']:<14} {r['tokens']:>6}  {r['kernel']:<24} {r['ms']:>8.2f} {r['gflop_s']:>8.0f}")
    if args.work_dir:
        write_json_atomic(Path(args.work_dir) / "kernels.json", rows)
    return rows


if __name__ == "__main__":
    run(main)
