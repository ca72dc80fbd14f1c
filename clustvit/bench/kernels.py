"""``clustvit bench kernels``: GFLOP/s of the kernels a ViT-B forward spends its time in, on this machine,
for each kernel choice.

Rows: the four linear shapes of a block (qkv, proj, fc1, fc2) through PyTorch's default float32 path
(``F.linear``: the BLAS, MKL in the PyPI wheels), through oneDNN's inner product (what
``clustvit.accel.cpu.OneDNNLinear`` runs) and in bfloat16; then fused attention (SDPA) in float32 and
bfloat16, attention head by head (``clustvit.accel.cpu.per_head_attention``, one of the kernels accelerated
inference measures and may choose: ``clustvit.accel.tune``), and the explicit float32 form (q k^T, softmax, @ v: what the official
implementation runs). 1025 tokens is a full 512² ViT sequence, 222 a typical merged ClustViT one.
Each cell is the median of ``--repeats`` calls after two untimed ones (``clustvit.bench.timing``);
docs/BENCHMARKS.md shows a run. The bfloat16 rows are kernel rates by dtype, not ``--amp``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from clustvit.accel import cpu as fast
from clustvit.atomic import write_json_atomic
from clustvit.bench.report import text_table
from clustvit.bench.timing import time_passes


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in ms, after two untimed calls (CPU kernels: no device to synchronise)."""
    return 1e3 * statistics.median(time_passes(fn, repeats, warmup=2))


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


def run(args: argparse.Namespace) -> list[dict]:
    """Every row at every ``--tokens`` length; print the table; ``--work-dir``: ``kernels.json``."""
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
    print(text_table(["op", "tokens", "kernel", "ms", "GFLOP/s"],
                     [[r["op"], str(r["tokens"]), r["kernel"], f"{r['ms']:.2f}", f"{r['gflop_s']:.0f}"] for r in rows],
                     align="lrlrr"))
    if args.work_dir:
        write_json_atomic(Path(args.work_dir) / "kernels.json", rows)
    return rows
