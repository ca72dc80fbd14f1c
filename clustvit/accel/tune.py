"""Kernels chosen by measurement: the fastest candidate per shape and dtype, timed once per host and cached.

:func:`clustvit.accel.accelerate` calls :func:`apply`, which decides for every plain ``nn.Linear`` and
``Attention`` of a model which kernel its eager CPU inference runs (``clustvit.accel.cpu``):

* Candidates. Linear: ``f_linear`` (``F.linear``, the library kernel) and ``onednn``
  (:class:`~clustvit.accel.cpu.OneDNNLinear`, float32, where the build has oneDNN; bfloat16 ``F.linear``
  already runs on oneDNN, so bfloat16 linears stay plain). Attention: ``sdpa`` (the library kernel, what
  the plain model runs), ``head_by_head`` and ``bmm`` (:data:`~clustvit.accel.cpu.ATTENTION_KERNELS`).
* Shapes: the model's own. A Linear of each distinct (in, out, bias) at the model's token count ``L``
  (``1 + N`` at its ``img_size``: the length of its ``pos_embed``), batch 1. An attention of each distinct
  (heads, head dim) at the lengths of :func:`ladder`: ``L``, ``L/2``, ``L/4``, ``L/8`` (ClustViT's merged
  length after the injection point varies per image). Each rung covers the lengths nearer to it than to
  its neighbours (geometrically), down to ``rung/sqrt(2)`` and up to ``rung*sqrt(2)`` at the ends; a length
  outside the ladder runs the library kernel (never an unmeasured choice).
* Timing: the project's loop (``clustvit.bench.timing.time_interleaved``) over each group's candidates,
  their order flipping every repeat so that a busy host's drift hits all alike; one warm-up call, then
  :data:`MIN_REPEATS` timed calls each, and more (up to :data:`MAX_REPEATS`) while the group stays within
  :attr:`Tuner.budget_s`; the median per candidate.
* Decision: a candidate other than the library kernel is chosen only when its median is at least
  :attr:`Tuner.margin` below the library kernel's; otherwise (noise, ties, a host where nothing else wins)
  the library kernel runs and the module keeps its plain class.
* Cache: JSON at :func:`default_cache_path` (``$XDG_CACHE_HOME/clustvit/kernels.json``, else
  ``~/.cache/clustvit/kernels.json``; :attr:`Tuner.path` overrides it, ``None`` keeps it in memory),
  ``{"format": 1, "hosts": {HOST: {MEASUREMENT: {"ms", "gflop_s", "repeats"}}}}`` where ``HOST`` is
  :func:`host_key` (CPU model, torch version, threads) and ``MEASUREMENT`` :meth:`Benchmark.key` (op,
  kernel, shape, dtype). Written atomically (``clustvit.atomic``), merged with what another process
  wrote meanwhile; an unreadable or malformed cache is ignored with a warning, an unwritable one too.
* Pins: ``{"linear": "onednn", "attention": "sdpa"}`` (``accelerate(kernels=...)``) or the same as text,
  ``linear=onednn,attention=sdpa`` (the ``CLUSTVIT_KERNELS`` environment variable, read by
  :func:`clustvit.accel.accelerate` only): a pinned op runs that kernel at every shape and length,
  unmeasured; an op not named (or named ``auto``) is measured.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import sys
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustvit.accel import cpu
from clustvit.atomic import write_json_atomic
from clustvit.bench import timing
from clustvit.models.attention import split_heads
from clustvit.models.vit import Attention

FORMAT = 1
LINEAR_KERNELS = ("f_linear", "onednn")  # the library kernel first
OPS = {"linear": LINEAR_KERNELS, "attention": tuple(cpu.ATTENTION_KERNELS)}
DEFAULT_LENGTH = 1025  # a 512x512 image in 16-pixel patches, plus the class token: for models without pos_embed
LADDER_STEPS = 4  # L, L/2, L/4, L/8
MIN_RUNG = 16  # shorter sequences cost too little for the kernel to matter
MIN_REPEATS, MAX_REPEATS = 5, 51
# Attention below ~16 MFLOP (cpu.MIN_MACS multiply-adds, the linear threshold) runs in microseconds: which
# kernel runs cannot matter, and timing it on a busy host measures only the scheduler.
MIN_ATTENTION_FLOPS = 2 * cpu.MIN_MACS
ENV = "CLUSTVIT_KERNELS"

log = logging.getLogger(__name__)

Measure = Callable[["Benchmark", float], dict[str, list[float]]]


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what ``platform`` knows: the cache's host key."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_key() -> str:
    """What a measurement holds for: CPU model, torch version (its kernels) and the thread count (a
    choice at 2 threads need not hold at 16)."""
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def default_cache_path() -> Path | None:
    """``$XDG_CACHE_HOME/clustvit/kernels.json``, else ``~/.cache/clustvit/kernels.json``; None (times kept
    in memory) where there is no home folder to hold it (a container user without one)."""
    root = os.environ.get("XDG_CACHE_HOME")
    if not root:
        try:
            root = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no passwd entry
            return None
    return Path(root) / "clustvit" / "kernels.json"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Benchmark:
    """One micro-benchmark: an op of the model's shape, in one dtype, over its candidate kernels.

    ``dims``: linear ``(tokens, in, out, bias)``; attention ``(heads, head_dim, length)``. ``candidates``
    start with the library kernel.
    """

    op: str
    dims: tuple[int, ...]
    dtype: torch.dtype
    candidates: tuple[str, ...]

    def shape(self) -> str:
        if self.op == "linear":
            tokens, c_in, c_out, bias = self.dims
            return f"{c_in}->{c_out}{'' if bias else ' nobias'} x{tokens}"
        heads, head_dim, length = self.dims
        return f"{heads}x{head_dim} l{length}"

    def key(self, kernel: str) -> str:
        """The cache key of ``kernel``'s time on this benchmark (within a host)."""
        return f"{self.op} {kernel} {self.shape()} {dtype_name(self.dtype)}"

    def flops(self) -> int:
        if self.op == "linear":
            tokens, c_in, c_out, _ = self.dims
            return 2 * tokens * c_in * c_out
        heads, head_dim, length = self.dims
        return 4 * heads * length * length * head_dim  # q k^T and p v, 2 FLOPs per multiply-add

    def context(self) -> AbstractContextManager:
        """What the kernels run under in the model: no grad, and autocast for a low-precision dtype."""
        return torch.autocast("cpu", dtype=self.dtype) if self.dtype != torch.float32 else nullcontext()

    def callables(self) -> dict[str, Callable[[], object]]:
        """One call per candidate, on inputs laid out as the model's (seeded random values)."""
        gen = torch.Generator().manual_seed(0)
        if self.op == "linear":
            tokens, c_in, c_out, bias = self.dims
            x = torch.randn(1, tokens, c_in, generator=gen, dtype=self.dtype)
            w = (torch.randn(c_out, c_in, generator=gen) * c_in**-0.5).to(self.dtype)
            b = torch.zeros(c_out, dtype=self.dtype) if bias else None
            table = {"f_linear": lambda: F.linear(x, w, b), "onednn": lambda: cpu.onednn_linear(x, w, b)}
        else:
            heads, head_dim, length = self.dims
            qkv = torch.randn(1, length, 3 * heads * head_dim, generator=gen).to(self.dtype)
            q, k, v = split_heads(qkv, heads)  # strided views, as Attention.forward passes them
            table = {name: (lambda f=f: f(q, k, v)) for name, f in cpu.ATTENTION_KERNELS.items()}
        return {name: table[name] for name in self.candidates}


def time_candidates(bench: Benchmark, budget_s: float) -> dict[str, list[float]]:
    """Seconds per call of each candidate of ``bench``, interleaved (``clustvit.bench.timing``): one
    warm-up call and :data:`MIN_REPEATS` timed calls each, then more (up to :data:`MAX_REPEATS` in all)
    while the whole stays within about ``budget_s`` seconds."""
    fns = bench.callables()
    passes = {name: (lambda f=f: timing.time_once(f)) for name, f in fns.items()}
    with torch.no_grad(), bench.context():
        seconds = timing.time_interleaved(passes, MIN_REPEATS, warmup=1)
        round_s = sum(statistics.median(s) for s in seconds.values())  # a median: robust to a stall
        more = min(MAX_REPEATS, int(budget_s / max(round_s, 1e-9))) - MIN_REPEATS
        if more > 0:
            for name, s in timing.time_interleaved(passes, more, warmup=0).items():
                seconds[name] += s
    return seconds


@dataclass(frozen=True)
class Choice:
    """One decision: which kernel ``modules`` modules run for one op, shape and dtype, and why.

    ``source``: ``measured`` (timed now), ``cached`` (timed before, read from the cache), ``pinned``,
    ``only candidate`` (nothing to choose from), ``too small`` (below the sizes worth timing: the library
    kernel), ``not measured`` (``tune=False`` and no cached times).
    ``ms``: the median milliseconds per candidate (empty when none were timed).
    """

    op: str
    shape: str
    dtype: str
    kernel: str
    source: str
    modules: int
    ms: dict[str, float] = field(default_factory=dict)
    flops: int = 0

    def gflop_s(self) -> dict[str, float]:
        return {k: self.flops / ms / 1e6 for k, ms in self.ms.items() if ms > 0}

    def line(self) -> str:
        rates = self.gflop_s()
        timed = ", ".join(f"{k} {ms:.4g} ms {rates.get(k, 0):.3g} GFLOP/s" for k, ms in self.ms.items())
        return (f"{self.op} {self.shape} {self.dtype} ({self.modules} modules): {self.kernel} [{self.source}]"
                + (f"; {timed}" if timed else ""))


def parse_pins(spec: str | Mapping[str, str] | None, origin: str = "kernels") -> dict[str, str]:
    """``{"linear": ..., "attention": ...}`` from a mapping or ``"linear=onednn,attention=sdpa"``; ``auto``
    (or an op left out) means measured. Raises ValueError naming ``origin`` on an unknown op or kernel."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        items = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            op, sep, kernel = part.partition("=")
            if not sep:
                raise ValueError(f"{origin}: {part!r} is not OP=KERNEL (e.g. linear=onednn,attention=sdpa)")
            items[op.strip()] = kernel.strip()
        spec = items
    pins = {}
    for op, kernel in spec.items():
        if op not in OPS:
            raise ValueError(f"{origin}: unknown op {op!r}: expected {' or '.join(OPS)}")
        if kernel not in (*OPS[op], "auto"):
            raise ValueError(f"{origin}: unknown {op} kernel {kernel!r}: expected one of {', '.join(OPS[op])}, auto")
        if kernel != "auto":
            pins[op] = kernel
    return pins


def full_length(model: nn.Module) -> int:
    """The model's full sequence length (``1 + N`` at its ``img_size``): the length of the first
    ``pos_embed`` (B, L, C) it holds, else :data:`DEFAULT_LENGTH`."""
    for m in model.modules():
        pos = getattr(m, "pos_embed", None)
        if isinstance(pos, Tensor) and pos.dim() == 3:
            return int(pos.shape[1])
    return DEFAULT_LENGTH


def ladder(length: int) -> list[int]:
    """The attention lengths measured, longest first: ``length`` halved :data:`LADDER_STEPS` - 1 times,
    those of at least :data:`MIN_RUNG` tokens (``length`` itself always)."""
    rungs = [length] + [round(length / 2**k) for k in range(1, LADDER_STEPS)]
    return sorted({r for r in rungs if r >= MIN_RUNG} | {length}, reverse=True)


def rung_ranges(rungs: list[int]) -> list[tuple[int, int]]:
    """The inclusive length range each rung (longest first) stands for: up to the geometric mean with its
    neighbours, and a factor sqrt(2) beyond the ends."""
    edges = [rungs[0] * math.sqrt(2)] + [math.sqrt(a * b) for a, b in zip(rungs, rungs[1:])] + [rungs[-1] / math.sqrt(2)]
    return [(math.floor(edges[i + 1]) + 1, math.floor(edges[i])) for i in range(len(rungs))]


def decide(times: dict[str, float], library: str, margin: float) -> str:
    """The fastest of ``times`` (median seconds per candidate) if it beats ``library`` by ``margin``
    (a fraction of the library kernel's time), else ``library``."""
    best = min(times, key=times.__getitem__)
    return best if best != library and times[best] <= (1.0 - margin) * times[library] else library


def read_cache(path: Path | None) -> dict[str, dict[str, dict]]:
    """The cache's hosts (empty when there is none); an unreadable or malformed file is ignored with a
    warning (it is rewritten by the next measurement)."""
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("hosts"), dict):
            raise ValueError(f"not a format-{FORMAT} kernel cache")
        hosts = data["hosts"]
        if not all(isinstance(h, dict) for h in hosts.values()):
            raise ValueError("a host entry is not an object")
    except (OSError, ValueError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        warnings.warn(f"clustvit: ignoring the kernel cache {path} ({e}); kernels will be measured again",
                      RuntimeWarning, stacklevel=2)
        return {}
    return hosts


def cached_ms(entries: Mapping[str, object], key: str) -> float | None:
    entry = entries.get(key)
    ms = entry.get("ms") if isinstance(entry, dict) else None
    return float(ms) if isinstance(ms, int | float) and not isinstance(ms, bool) and ms > 0 else None


@dataclass
class Tuner:
    """How :func:`apply` gets kernel times: ``path`` the cache file (None: memory only), ``measure``
    the timing function (:func:`time_candidates`; tests pass a fake; None: never time, use cached times
    or the library kernel), ``budget_s`` seconds of timing per group of candidates, ``margin`` how much
    faster than the library kernel another must be to be chosen."""

    path: Path | None = field(default_factory=default_cache_path)
    measure: Measure | None = time_candidates
    budget_s: float = 0.4
    margin: float = 0.05

    def times(self, benches: list[Benchmark]) -> dict[Benchmark, tuple[dict[str, float], str]]:
        """Median ms per candidate of each benchmark and where they came from (``cached`` / ``measured``;
        an empty dict and ``not measured`` without a cache entry and without ``measure``)."""
        if not benches:
            return {}
        host = host_key()
        known = read_cache(self.path).get(host, {})
        out: dict[Benchmark, tuple[dict[str, float], str]] = {}
        fresh: dict[str, dict] = {}
        announced = False
        for bench in dict.fromkeys(benches):
            ms = {k: cached_ms(known, bench.key(k)) for k in bench.candidates}
            if all(v is not None for v in ms.values()):
                out[bench] = ({k: v for k, v in ms.items() if v is not None}, "cached")
                continue
            if self.measure is None:
                out[bench] = ({}, "not measured")
                continue
            if not announced:
                # The first start on a host spends seconds here: say why, once, and where it is kept.
                where = f"; cached in {self.path}" if self.path is not None else ""
                print(f"clustvit: timing the CPU kernels for this model's shapes once{where}", file=sys.stderr)
                announced = True
            seconds = self.measure(bench, self.budget_s)
            medians = {k: 1e3 * statistics.median(s) for k, s in seconds.items()}
            log.info("kernel timing %s %s: %s", bench.op, bench.shape(), medians)
            out[bench] = (medians, "measured")
            for k, ms_k in medians.items():
                fresh[bench.key(k)] = {"ms": ms_k, "gflop_s": bench.flops() / ms_k / 1e6, "repeats": len(seconds[k])}
        if fresh:
            self.save(host, fresh)
        return out

    def save(self, host: str, fresh: dict[str, dict]) -> None:
        """Add ``fresh`` entries to the cache file (re-read first: another process may have added its own);
        a file that cannot be written is only warned about."""
        if self.path is None:
            return
        hosts = read_cache(self.path)
        hosts.setdefault(host, {}).update(fresh)
        try:
            write_json_atomic(self.path, {"format": FORMAT, "hosts": hosts})
        except OSError as e:
            warnings.warn(f"clustvit: cannot write the kernel cache ({e}); kernels will be measured again next time",
                          RuntimeWarning, stacklevel=2)


def apply(model: nn.Module, dtype: torch.dtype | None, pins: Mapping[str, str], tuner: Tuner) -> list[Choice]:
    """Choose and install the kernel of every plain ``nn.Linear`` and ``Attention`` in ``model`` (in place)
    for inference in ``dtype`` (None: float32); returns the decisions (:class:`Choice`), which
    :func:`clustvit.accel.describe` reports."""
    dtype = dtype or torch.float32
    length = full_length(model)
    linears: dict[tuple[int, int, int], list[nn.Linear]] = {}
    attentions: dict[tuple[int, int], list[Attention]] = {}
    for m in model.modules():
        if type(m) is nn.Linear:
            linears.setdefault((m.in_features, m.out_features, int(m.bias is not None)), []).append(m)
        elif type(m) is Attention:
            attentions.setdefault((m.num_heads, m.qkv.in_features // m.num_heads), []).append(m)

    linear_benches = {dims: Benchmark("linear", (length, *dims), torch.float32, LINEAR_KERNELS) for dims in linears}
    attention_benches = {dims: [Benchmark("attention", (*dims, rung), dtype, cpu.attention_candidates(dtype))
                                for rung in ladder(length)] for dims in attentions}
    to_time = [] if "attention" in pins else [b for rungs in attention_benches.values() for b in rungs
                                              if b.flops() >= MIN_ATTENTION_FLOPS]
    if "linear" not in pins and dtype == torch.float32:
        to_time += [b for (c_in, c_out, _), b in linear_benches.items() if length * c_in * c_out >= cpu.MIN_MACS]
    times = tuner.times(to_time)

    choices = []
    for dims, modules in linears.items():
        bench = linear_benches[dims]
        if "linear" in pins:
            kernel, source, ms = pins["linear"], "pinned", {}
        elif dtype != torch.float32:  # bfloat16 F.linear runs on oneDNN already
            kernel, source, ms = "f_linear", "only candidate", {}
        elif bench not in times:  # below cpu.MIN_MACS, where OneDNNLinear would call F.linear anyway
            kernel, source, ms = "f_linear", "too small", {}
        else:
            ms, source = times[bench]
            kernel = decide(ms, "f_linear", tuner.margin) if ms else "f_linear"
        if kernel == "onednn":
            for m in modules:
                cpu.install_linear(m)
        choices.append(Choice("linear", bench.shape(), dtype_name(dtype),
                              kernel, source, len(modules), ms, bench.flops()))
    for dims, modules in attentions.items():
        if "attention" in pins:
            plan = cpu.AttentionPlan.everywhere(pins["attention"])
            choices.append(Choice("attention", f"{dims[0]}x{dims[1]} all lengths", dtype_name(dtype), pins["attention"],
                                  "pinned", len(modules)))
        else:
            spans = []
            for bench, (lo, hi) in zip(attention_benches[dims], rung_ranges(ladder(length)), strict=True):
                ms, source = times.get(bench, ({}, "too small"))  # under MIN_ATTENTION_FLOPS: the library kernel
                kernel = decide(ms, "sdpa", tuner.margin) if ms else "sdpa"
                if kernel != "sdpa":
                    spans.append((lo, hi, kernel))
                choices.append(Choice("attention", f"{bench.shape()} (lengths {lo}-{hi})", dtype_name(dtype), kernel,
                                      source, len(modules), ms, bench.flops()))
            plan = cpu.AttentionPlan({dtype: tuple(spans)})
        for m in modules:
            cpu.install_attention(m, plan)
    return choices


def env_pins() -> str | None:
    """The ``CLUSTVIT_KERNELS`` pin text, if set and not empty."""
    return os.environ.get(ENV) or None
