"""clustvit.accel.tune: kernels chosen by measurement, cached per host, pinned on request.

Deterministic: every test injects its timings (a fake ``measure``) or pins; none asserts a speed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from clustvit.accel import Tuner, accelerate, cpu, describe, tune
from clustvit.bench import timing
from clustvit.models.vit import Attention

needs_onednn = pytest.mark.skipif(not cpu.onednn_available(), reason="this torch build has no oneDNN inner product")


class FakeTimes:
    """A ``measure`` function: seconds per call from ``table(benchmark, kernel)``; records what it was asked."""

    def __init__(self, table: Callable[[tune.Benchmark, str], float]) -> None:
        self.table, self.asked = table, []

    def __call__(self, bench: tune.Benchmark, budget_s: float) -> dict[str, list[float]]:
        self.asked.append(bench)
        return {k: [self.table(bench, k)] * 5 for k in bench.candidates}


def linear_and_attention() -> nn.Module:
    """Linears big enough to time at the default 1025 tokens (512->256, and the attention's 128->384 and
    128->128), and an attention of 2 heads of 64 (timed at 1025, 512 and 256 tokens; 128 is too small)."""
    torch.manual_seed(0)
    return nn.ModuleDict({"fc": nn.Linear(512, 256), "attn": Attention(128, 2)}).eval()


def attention_times(winners: dict[int, str]) -> Callable[[tune.Benchmark, str], float]:
    """1 s for the library kernels, 0.5 s for the kernel ``winners`` names at a length, 2 s otherwise."""
    def table(bench: tune.Benchmark, kernel: str) -> float:
        if kernel in ("sdpa", "f_linear"):
            return 1.0
        won = winners.get(bench.dims[-1]) if bench.op == "attention" else winners.get(0)
        return 0.5 if kernel == won else 2.0
    return table


@needs_onednn
def test_the_measured_winner_runs_per_length_bucket(tmp_path: Path) -> None:
    fake = FakeTimes(attention_times({0: "onednn", 1025: "head_by_head", 256: "bmm"}))
    model = accelerate(linear_and_attention(), "cpu", tune=Tuner(path=tmp_path / "k.json", measure=fake))
    assert sorted((b.op, b.dims) for b in fake.asked) == [
        ("attention", (2, 64, 256)), ("attention", (2, 64, 512)), ("attention", (2, 64, 1025)),
        ("linear", (1025, 128, 128, 1)), ("linear", (1025, 128, 384, 1)), ("linear", (1025, 512, 256, 1))]
    assert type(model.fc) is cpu.OneDNNLinear and type(model.attn) is cpu.KernelAttention
    plan = model.attn.kernel_plan
    # Each rung stands for the lengths geometrically nearest to it; beyond sqrt(2) of the ends, the library.
    assert [plan.pick(torch.float32, n) for n in (1449, 1450, 725, 724, 363, 362, 182, 181, 100)] == [
        "head_by_head", "sdpa", "head_by_head", "sdpa", "sdpa", "bmm", "bmm", "sdpa", "sdpa"]
    assert plan.pick(torch.bfloat16, 1025) == "sdpa"  # measured in float32 only
    report = describe(model)
    assert dict(report) == {"onednn_linear": 3, "head_by_head_attention": 1, "bmm_attention": 1}
    lines = report.lines()
    assert lines[0] == ("linear 512->256 x1025 float32 (1 modules): onednn [measured]; "
                        "f_linear 1000 ms 0.269 GFLOP/s, onednn 500 ms 0.537 GFLOP/s")
    assert [c.kernel for c in report.choices] == ["onednn"] * 3 + ["head_by_head", "sdpa", "bmm", "sdpa"]
    assert [c.source for c in report.choices] == ["measured"] * 6 + ["too small"]


@needs_onednn
def test_where_no_hand_written_kernel_wins_the_model_stays_plain(tmp_path: Path) -> None:
    """Slower, or faster only within the margin (3% < 5%): the library kernels, in the plain classes."""
    def table(bench: tune.Benchmark, kernel: str) -> float:
        return 1.0 if kernel in ("sdpa", "f_linear") else 0.97 if kernel == "bmm" else 1.5
    model = accelerate(linear_and_attention(), "cpu", tune=Tuner(path=tmp_path / "k.json", measure=FakeTimes(table)))
    assert type(model.fc) is nn.Linear and type(model.attn) is Attention
    assert dict(describe(model)) == dict.fromkeys(cpu.KINDS, 0)
    assert {c.kernel for c in describe(model).choices} == {"f_linear", "sdpa"}


@needs_onednn
def test_timings_are_cached_per_host_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cache" / "kernels.json"
    first = FakeTimes(attention_times({0: "onednn", 1025: "bmm"}))
    accelerate(linear_and_attention(), "cpu", tune=Tuner(path=path, measure=first))
    data = json.loads(path.read_text())
    host = tune.host_key()
    assert data["format"] == tune.FORMAT and list(data["hosts"]) == [host]
    assert f"| torch {torch.__version__} | {torch.get_num_threads()} threads" in host
    entry = data["hosts"][host]["attention bmm 2x64 l1025 float32"]
    assert entry == {"ms": 500.0, "gflop_s": pytest.approx(4 * 2 * 1025**2 * 64 / 500 / 1e6), "repeats": 5}
    assert len(data["hosts"][host]) == 3 * 2 + 3 * 3  # 2 kernels of 3 linear shapes, 3 attention kernels at 3 lengths

    def no_timing(bench: tune.Benchmark, budget_s: float) -> dict[str, list[float]]:
        raise AssertionError("timed again")
    again = accelerate(linear_and_attention(), "cpu", tune=Tuner(path=path, measure=no_timing))
    assert [c.source for c in describe(again).choices] == ["cached"] * 6 + ["too small"]
    assert type(again.fc) is cpu.OneDNNLinear and again.attn.kernel_plan.pick(torch.float32, 1025) == "bmm"
    # Another host key (here: another thread count) times again, and keeps the first host's entries.
    monkeypatch.setattr(tune, "host_key", lambda: "other cpu | torch x | 16 threads")
    other = FakeTimes(attention_times({}))
    model = accelerate(linear_and_attention(), "cpu", tune=Tuner(path=path, measure=other))
    assert len(other.asked) == 6 and type(model.fc) is nn.Linear and type(model.attn) is Attention
    assert sorted(json.loads(path.read_text())["hosts"]) == sorted([host, "other cpu | torch x | 16 threads"])


@needs_onednn
@pytest.mark.parametrize("content", ["{not json", '{"format": 99, "hosts": {}}', '{"format": 1, "hosts": {"h": 3}}',
                                     "\udcff"])
def test_a_corrupt_cache_is_ignored_with_a_warning_and_rewritten(tmp_path: Path, content: str) -> None:
    path = tmp_path / "kernels.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    fake = FakeTimes(attention_times({0: "onednn"}))
    with pytest.warns(RuntimeWarning, match=r"ignoring the kernel cache .*kernels.json"):
        model = accelerate(linear_and_attention(), "cpu", tune=Tuner(path=path, measure=fake))
    assert len(fake.asked) == 6 and type(model.fc) is cpu.OneDNNLinear
    assert json.loads(path.read_text())["format"] == tune.FORMAT  # rewritten, valid


@needs_onednn
def test_a_malformed_entry_is_timed_again_and_an_unwritable_cache_only_warns(tmp_path: Path) -> None:
    path = tmp_path / "kernels.json"
    fake = FakeTimes(attention_times({}))
    accelerate(linear_and_attention(), "cpu", tune=Tuner(path=path, measure=fake))
    data = json.loads(path.read_text())
    data["hosts"][tune.host_key()]["linear onednn 512->256 x1025 float32"]["ms"] = "fast"
    path.write_text(json.dumps(data))
    fake.asked.clear()
    accelerate(linear_and_attention(), "cpu", tune=Tuner(path=path, measure=fake))
    assert [b.op for b in fake.asked] == ["linear"]  # only the group with the bad entry
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    with pytest.warns(RuntimeWarning, match="cannot write the kernel cache"):
        model = accelerate(linear_and_attention(), "cpu", tune=Tuner(path=blocked / "kernels.json", measure=fake))
    assert type(model.attn) is Attention  # still accelerated, from fresh timings


@needs_onednn
def test_tune_false_never_times(tmp_path: Path) -> None:
    """Cached times if there are, else the library kernels."""
    path = tmp_path / "kernels.json"
    model = accelerate(linear_and_attention(), "cpu", tune=Tuner(path=path, measure=None))
    assert type(model.fc) is nn.Linear and {c.source for c in describe(model).choices} == {"not measured", "too small"}
    assert not path.exists()
    accelerate(linear_and_attention(), "cpu", tune=Tuner(path=path, measure=FakeTimes(attention_times({1025: "bmm"}))))
    model = accelerate(linear_and_attention(), "cpu", tune=Tuner(path=path, measure=None))
    assert model.attn.kernel_plan.pick(torch.float32, 1025) == "bmm"


@needs_onednn
def test_pins_by_argument_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pinned op runs its kernel at every size, untimed; an op left out is still timed. The argument
    wins over CLUSTVIT_KERNELS; unknown ops or kernels are refused in one line."""
    fake = FakeTimes(attention_times({0: "onednn"}))
    tuner = Tuner(path=tmp_path / "kernels.json", measure=fake)
    model = accelerate(linear_and_attention(), "cpu", kernels={"attention": "head_by_head"}, tune=tuner)
    assert {b.op for b in fake.asked} == {"linear"} and type(model.fc) is cpu.OneDNNLinear
    assert {model.attn.kernel_plan.pick(dt, n) for dt in (torch.float32, torch.bfloat16) for n in (1, 99, 5000)} == {
        "head_by_head"}
    assert describe(model).choices[-1].line() == "attention 2x64 all lengths float32 (1 modules): head_by_head [pinned]"
    monkeypatch.setenv("CLUSTVIT_KERNELS", "linear=f_linear, attention=bmm")
    fake.asked.clear()
    model = accelerate(linear_and_attention(), "cpu", tune=tuner)
    assert fake.asked == [] and type(model.fc) is nn.Linear and model.attn.kernel_plan.pick(torch.float32, 7) == "bmm"
    model = accelerate(linear_and_attention(), "cpu", kernels="linear=onednn,attention=auto", tune=tuner)
    assert type(model.fc) is cpu.OneDNNLinear and type(model.attn) is Attention  # sdpa measured fastest
    monkeypatch.setenv("CLUSTVIT_KERNELS", "attention=flash")
    with pytest.raises(ValueError, match="^CLUSTVIT_KERNELS: unknown attention kernel 'flash': expected one of "
                                         "sdpa, head_by_head, bmm, auto$"):
        accelerate(linear_and_attention(), "cpu", tune=tuner)
    with pytest.raises(ValueError, match="^kernels: unknown op 'conv': expected linear or attention$"):
        accelerate(linear_and_attention(), "cpu", kernels={"conv": "onednn"}, tune=tuner)
    with pytest.raises(ValueError, match="^kernels: 'onednn' is not OP=KERNEL"):
        accelerate(linear_and_attention(), "cpu", kernels="onednn", tune=tuner)


@needs_onednn
def test_bf16_times_attention_in_bf16_and_leaves_linears_plain(tmp_path: Path) -> None:
    """bfloat16 F.linear already runs on oneDNN: no linear candidate to time; attention in bfloat16."""
    fake = FakeTimes(attention_times({512: "head_by_head"}))
    model = accelerate(linear_and_attention(), "cpu", torch.bfloat16, tune=Tuner(path=tmp_path / "k.json", measure=fake))
    assert {b.op for b in fake.asked} == {"attention"} and {b.dtype for b in fake.asked} == {torch.bfloat16}
    assert type(model.fc) is nn.Linear and model.fc.weight.dtype == torch.bfloat16
    assert model.attn.kernel_plan.pick(torch.bfloat16, 512) == "head_by_head"
    assert model.attn.kernel_plan.pick(torch.float32, 512) == "sdpa"
    assert describe(model).choices[0].line() == "linear 512->256 x1025 bfloat16 (1 modules): f_linear [only candidate]"


def test_tiny_models_time_nothing(tmp_path: Path) -> None:
    """Below cpu.MIN_MACS (linears) and MIN_ATTENTION_FLOPS (attention) nothing is timed: the library kernels."""
    torch.manual_seed(0)
    fake = FakeTimes(attention_times({}))
    model = nn.ModuleDict({"fc": nn.Linear(32, 16), "attn": Attention(32, 2)})
    model.pos_embed = nn.Parameter(torch.zeros(1, 65, 32))  # a 128² image in 16-pixel patches
    accelerate(model, "cpu", tune=Tuner(path=tmp_path / "k.json", measure=fake))
    assert fake.asked == [] and not (tmp_path / "k.json").exists()
    assert type(model.fc) is nn.Linear and type(model.attn) is Attention


def test_lengths_come_from_the_model() -> None:
    """The full length is the model's pos_embed length; the ladder halves it, the ranges tile it."""
    vit = nn.Module()
    vit.pos_embed = nn.Parameter(torch.zeros(1, 1025, 8))
    assert tune.full_length(vit) == 1025 and tune.full_length(nn.Linear(2, 2)) == tune.DEFAULT_LENGTH
    assert tune.ladder(1025) == [1025, 512, 256, 128] and tune.ladder(257) == [257, 128, 64, 32] and tune.ladder(17) == [17]
    ranges = tune.rung_ranges([1025, 512, 256, 128])
    assert ranges == [(725, 1449), (363, 724), (182, 362), (91, 181)]
    assert all(hi + 1 == prev_lo for (_, hi), (prev_lo, _) in zip(ranges[1:], ranges, strict=False))  # no gap


def test_default_measurement_uses_the_timing_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """time_candidates goes through clustvit.bench.timing.time_interleaved: a warm-up, MIN_REPEATS
    interleaved timed calls per candidate, more only within the budget (none here; no speed asserted)."""
    calls = []
    real = timing.time_interleaved

    def spy(passes: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
        calls.append((tuple(passes), repeats, warmup))
        return real(passes, repeats, warmup)
    monkeypatch.setattr(timing, "time_interleaved", spy)
    bench = tune.Benchmark("attention", (2, 8, 16), torch.float32, cpu.attention_candidates(torch.float32))
    seconds = tune.time_candidates(bench, budget_s=0.0)
    assert calls == [(bench.candidates, tune.MIN_REPEATS, 1)]
    assert {k: len(v) for k, v in seconds.items()} == dict.fromkeys(bench.candidates, tune.MIN_REPEATS)
    assert all(s > 0 for v in seconds.values() for s in v)
    linear = tune.Benchmark("linear", (4, 8, 3, 0), torch.float32, tune.LINEAR_KERNELS)
    outs = {k: f() for k, f in linear.callables().items()}
    torch.testing.assert_close(outs["onednn"], outs["f_linear"], rtol=1e-5, atol=1e-5)  # the same product


def test_decide_prefers_the_library_within_the_margin() -> None:
    assert tune.decide({"sdpa": 1.0, "bmm": 0.96}, "sdpa", 0.05) == "sdpa"
    assert tune.decide({"sdpa": 1.0, "bmm": 0.95, "head_by_head": 0.9}, "sdpa", 0.05) == "head_by_head"
    assert tune.decide({"f_linear": 1.0, "onednn": 1.0}, "f_linear", 0.0) == "f_linear"
    assert tune.default_cache_path().name == "kernels.json"
