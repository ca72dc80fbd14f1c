"""clustvit.accel: the optional speed layer over the plain model (kernels, weight casts, the plain fallback)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_models import tiny_cfg
from torch.utils.flop_counter import FlopCounterMode

from clustvit import parity
from clustvit.accel import accelerate, amp_dtype, cast_weights, cpu, describe, plain
from clustvit.accel.dtype import warn_if_emulated
from clustvit.models.build import build_segmentor
from clustvit.models.vit import Attention

REPO = Path(__file__).resolve().parents[1]
FIXTURES = parity.fixture_files(Path(os.environ.get("CLUSTVIT_PARITY_FIXTURES", parity.default_folder())))
ONEDNN = cpu.onednn_available()
ATTENTION = [k for k in cpu.ATTENTION_KERNELS if k != "sdpa"]  # the hand-written attention kernels
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN inner product")


def test_models_use_public_pytorch_only():
    """The model files read no environment, call no private torch API and hold no module-level switch."""
    banned = re.compile(r"os\.environ|getenv|torch\.ops\.|torch\._C|_python_dispatch|^[A-Z_]+ = (True|False)\b", re.M)
    hits = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in sorted((REPO / "clustvit" / "models").rglob("*.py"))
            for m in banned.finditer(p.read_text())]
    assert hits == []


def test_model_runs_and_accelerate_installs_nothing_without_the_private_ops():
    """A torch build without oneDNN (simulated in a fresh interpreter): the model imports, accelerate
    installs no kernel, and the result is the plain model's."""
    code = """
import torch
torch.backends.mkldnn.is_available = lambda: False  # as on a build without oneDNN
from clustvit.accel import accelerate, describe
from clustvit.models.build import build_segmentor
from test_models import tiny_cfg
torch.manual_seed(0)
seg = build_segmentor(tiny_cfg()).eval()
x = torch.rand(2, 3, 64, 64) * 255
with torch.no_grad():
    ref = seg.predict_logits(x)
    accelerate(seg, "cpu")
    assert describe(seg) == {"onednn_linear": 0, "head_by_head_attention": 0, "bmm_attention": 0}, describe(seg)
    assert torch.equal(seg.predict_logits(x), ref)
    accelerate(seg, "cpu", kernels={"linear": "onednn", "attention": "bmm"})  # a pin cannot install them either
    assert sum(describe(seg).values()) == 0
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@needs_onednn
def test_accelerate_keeps_parameters_and_keys_and_plain_undoes_it():
    torch.manual_seed(0)
    seg = build_segmentor(tiny_cfg()).eval()
    keys, params = list(seg.state_dict()), [p.data_ptr() for p in seg.parameters()]
    twin = accelerate(copy.deepcopy(seg), "cpu", kernels=cpu.KINDS)
    assert describe(seg) == {"onednn_linear": 0, "head_by_head_attention": 0, "bmm_attention": 0}  # a copy was
    # Every nn.Linear and every Attention: backbone, Cluster module, Regenerator and the Segmenter head; forcing
    # every kind deals the attention kernels out in turn, so both run somewhere.
    n_linear = sum(type(m) is torch.nn.Linear for m in seg.modules())
    n_attn = sum(type(m) is Attention for m in seg.modules())
    assert describe(twin) == {"onednn_linear": n_linear, "head_by_head_attention": 2, "bmm_attention": 2} and n_attn == 4
    assert list(twin.state_dict()) == keys
    accelerate(seg, "cpu", kernels={"linear": "onednn", "attention": "head_by_head"})
    assert [p.data_ptr() for p in seg.parameters()] == params  # in place, the same tensors
    assert describe(seg) == {"onednn_linear": n_linear, "head_by_head_attention": n_attn, "bmm_attention": 0}
    assert list(seg.state_dict()) == keys
    # Accelerating again re-plans from the plain modules; plain() takes out one kind, or all.
    accelerate(seg, "cpu", kernels={"linear": "f_linear", "attention": "bmm"})
    assert describe(seg) == {"onednn_linear": 0, "head_by_head_attention": 0, "bmm_attention": n_attn}
    assert describe(plain(twin, ("bmm_attention",))) == {"onednn_linear": n_linear, "head_by_head_attention": 2,
                                                         "bmm_attention": 0}
    assert sum(type(m) is Attention for m in twin.modules()) == 2  # a plan left with SDPA only: the plain class
    assert describe(plain(seg)) == {"onednn_linear": 0, "head_by_head_attention": 0, "bmm_attention": 0}
    assert all(type(m) in (torch.nn.Linear, Attention) for m in seg.modules() if isinstance(m, (torch.nn.Linear, Attention)))


def test_cast_weights_is_what_autocast_computes():
    """Pre-cast matmul weights give exactly what autocast computes, without re-casting them per forward."""
    torch.manual_seed(0)
    for head in ("SegmenterMaskTransformerHead", "UPerHead"):
        seg = build_segmentor(tiny_cfg(head=head, out_indices=(0, 1, 2))).eval()
        ref = copy.deepcopy(seg)
        cast_weights(seg, torch.bfloat16)
        assert seg.backbone.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
        assert seg.backbone.norm.weight.dtype == torch.float32 and seg.backbone.pos_embed.dtype == torch.float32
        x = torch.randint(0, 256, (2, 3, 64, 64)).float()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(seg.predict_logits(x), ref.predict_logits(x), atol=0, rtol=0)


@needs_onednn
def test_onednn_linear_only_for_float32_eager_inference_and_matches_f_linear():
    torch.manual_seed(0)
    layer = torch.nn.Linear(512, 256)
    accelerate(layer, "cpu", kernels={"linear": "onednn"})
    assert type(layer) is cpu.OneDNNLinear and list(layer.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 70, 512)  # 140 x 512 x 256 = 18M multiply-adds: above cpu.MIN_MACS
    ref = F.linear(x, layer.weight, layer.bias)
    with torch.no_grad():
        out = layer(x)
        assert not torch.equal(out, ref)  # another kernel (summation order)...
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # ...the same product
        assert torch.equal(out, cpu.onednn_linear(x, layer.weight, layer.bias))
        torch.testing.assert_close(layer(x[:, ::2]), ref[:, ::2], rtol=1e-5, atol=1e-5)  # strided input
        assert layer(x[:, :0]).shape == (2, 0, 256)
        small = x[:, :2]  # too small: the BLAS's lower call overhead wins
        assert torch.equal(layer(small), F.linear(small, layer.weight, layer.bias))
        with FlopCounterMode(display=False) as counter:  # dispatch modes see the plain matmul
            assert torch.equal(layer(x), ref)
        assert counter.get_total_flops() == 2 * 140 * 512 * 256
    assert torch.equal(layer(x), ref)  # autograd recording: the plain path
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_per_head_attention_is_attention_on_strided_views():
    torch.manual_seed(0)
    qkv = torch.randn(2, 7, 3, 3, 8, dtype=torch.float64)  # (n, l, 3, h, d), as the Attention module packs it
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (n, h, l, d), strided views
    out = cpu.per_head_attention(q, k, v)
    assert out.shape == (2, 3, 7, 8) and out.is_contiguous()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-12, atol=1e-12)


@needs_onednn
@pytest.mark.parametrize("kernel", ["head_by_head", "bmm"])
def test_attention_runs_the_kernel_its_plan_picks_by_dtype_and_length(kernel: str):
    """A plan running ``kernel`` for bf16 from 256 tokens and for float32 from 385 (to 2048), eager no-grad
    CPU only, SDPA elsewhere; in float32 the kernel is as exact as the fused one, in bf16 it rounds the
    logits (about twice the fused kernel's error)."""
    sdpa = F.scaled_dot_product_attention
    fn = cpu.ATTENTION_KERNELS[kernel]
    attn = Attention(128, 2)
    cpu.install_attention(attn, cpu.AttentionPlan({torch.bfloat16: ((256, 2048, kernel),),
                                                   torch.float32: ((385, 2048, kernel),)}))
    assert type(attn) is cpu.KernelAttention and list(attn.state_dict()) == ["qkv.weight", "qkv.bias", "proj.weight",
                                                                            "proj.bias"]
    gen = torch.Generator().manual_seed(0)
    q, k, v = (2 * torch.randn(1, 2, 400, 64, generator=gen, dtype=torch.float64) for _ in range(3))
    ref = sdpa(q, k, v)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    qf, kf, vf = q.float(), k.float(), v.float()
    with torch.no_grad():
        out = attn.attend(qb, kb, vb)
        assert torch.equal(out, fn(qb, kb, vb)) and not torch.equal(out, sdpa(qb, kb, vb))
        err, fused_err = ((x.double() - ref).abs().mean().item() for x in (out, sdpa(qb, kb, vb)))
        assert fused_err < err < 2.5 * fused_err
        out = attn.attend(qf, kf, vf)
        assert torch.equal(out, fn(qf, kf, vf)) and not torch.equal(out, sdpa(qf, kf, vf))
        err, fused_err = ((x.double() - ref).abs().max().item() for x in (out, sdpa(qf, kf, vf)))
        assert err < 1.5 * fused_err
        for a, b, c in ((qb[:, :, :255], kb[:, :, :255], vb[:, :, :255]),  # bf16 below its range
                        (qf[:, :, :384], kf[:, :, :384], vf[:, :, :384])):  # float32 below its range
            assert torch.equal(attn.attend(a, b, c), sdpa(a, b, c))
        assert torch.equal(attn.attend(q, k, v), sdpa(q, k, v))  # a dtype the plan does not cover
    assert torch.equal(attn.attend(qf, kf, vf), sdpa(qf, kf, vf))  # autograd recording: fused


def test_bmm_attention_is_attention_on_strided_views():
    """Two batched matmuls per sequence, the softmax in place: SDPA's result on (n, h, l, d) strided views."""
    torch.manual_seed(0)
    qkv = torch.randn(3, 7, 3, 4, 8, dtype=torch.float64)  # (n, l, 3, h, d), as the Attention module packs it
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    out = cpu.bmm_attention(q, k, v)
    assert out.shape == (3, 4, 7, 8) and out.is_contiguous()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-12, atol=1e-12)


@needs_onednn
@pytest.mark.parametrize("kernel", ATTENTION)
def test_accelerated_packed_attention_is_the_plain_one(kernel: str):
    """Packed sequences of a batch (one of them full length), each through the pinned kernel, match the plain op."""
    torch.manual_seed(0)
    plain_attn = Attention(64, 2).eval()
    fast = accelerate(copy.deepcopy(plain_attn), "cpu", kernels={"attention": kernel})
    assert type(fast) is cpu.KernelAttention and fast.kernel_plan.pick(torch.float32, 9) == kernel
    cu = torch.tensor([0, 9, 409, 430], dtype=torch.int32)
    x = torch.randn(1, 430, 64)
    from clustvit.models.vit import Packing

    with torch.no_grad():
        torch.testing.assert_close(fast(x, Packing(cu, 400)), plain_attn(x, Packing(cu, 400)), rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("kernel", ATTENTION)
def test_bf16_segmenter_attention_kernels_stay_close_to_the_fused_kernel(kernel: str):
    """A 256² image (257 tokens) through ``kernel`` in bf16, about as close to float32 as the fused kernel."""
    torch.manual_seed(0)
    seg = build_segmentor(tiny_cfg(backbone="VisionTransformer", img_size=256)).eval()
    x = torch.randint(0, 256, (1, 3, 256, 256)).float()
    with torch.no_grad():
        fp32 = seg.predict_logits(x)
        fused_model = cast_weights(copy.deepcopy(seg), torch.bfloat16)
        accelerate(seg, "cpu", torch.bfloat16, kernels={"linear": "onednn", "attention": kernel})
        with torch.autocast("cpu", dtype=torch.bfloat16):
            per_head, fused = seg.predict_logits(x), fused_model.predict_logits(x)
    assert not torch.equal(per_head, fused)
    err, fused_err = ((y - fp32).abs().mean().item() for y in (per_head, fused))
    agree, fused_agree = ((y.argmax(1) == fp32.argmax(1)).float().mean().item() for y in (per_head, fused))
    assert fused_err < err < 1.5 * fused_err
    assert agree > 0.95 and fused_agree > 0.95


@pytest.mark.parametrize("kernel", ATTENTION)
def test_exported_accelerated_attention_holds_only_portable_sdpa(kernel: str):
    """The attention kernels are eager-only: an exported graph holds SDPA, never a oneDNN op or a bmm, even
    where eager float32 inference runs ``kernel``."""
    torch.manual_seed(0)
    attn = accelerate(Attention(32, 2).eval(), "cpu", kernels={"linear": "onednn", "attention": kernel})
    x = torch.randn(1, 400, 32)
    with torch.no_grad():
        program = torch.export.export(attn, (x,))
        eager = attn(x)
    graph = program.graph_module.code
    assert "scaled_dot_product_attention" in graph and "mkldnn" not in graph and "bmm" not in graph
    torch.testing.assert_close(program.module()(x), eager, rtol=1e-5, atol=1e-6)


@needs_onednn
def test_inference_entry_points_accelerate_by_default_and_not_when_told(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path):
    """clustvit.load accelerates (its decisions recorded), honours the CLUSTVIT_KERNELS pin, and not with
    accel=False; the predictions stay the plain model's."""
    import clustvit

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # any timing it does goes to this test's cache
    cfg = str(REPO / "config/demo/segmenter_clustvit-demo_synthetic.py")
    tuned = clustvit.load(cfg)
    assert describe(tuned.model).choices  # accelerate ran and decided something for every op
    monkeypatch.setenv("CLUSTVIT_KERNELS", "linear=onednn,attention=bmm")
    fast, slow = clustvit.load(cfg), clustvit.load(cfg, accel=False)
    n_attn = sum(isinstance(m, Attention) for m in slow.model.modules())
    assert describe(fast.model)["onednn_linear"] > 0 and describe(fast.model)["bmm_attention"] == n_attn > 0
    assert describe(slow.model) == {"onednn_linear": 0, "head_by_head_attention": 0, "bmm_attention": 0}
    rgb = (torch.rand(96, 128, 3) * 255).byte().numpy()
    assert (fast.predict(rgb) == slow.predict(rgb)).all() and (tuned.predict(rgb) == slow.predict(rgb)).all()


@needs_onednn
@pytest.mark.parametrize("kernel", ATTENTION)
def test_accelerated_model_is_batch_invariant(kernel: str):
    """Accelerated, at sizes where its kernels run (oneDNN linears; packed sequences of several lengths and
    an unreduced 401-token image attend through ``kernel``): every image's logits are its batch-1 ones, and
    no label differs."""
    torch.manual_seed(0)
    cfg = tiny_cfg(img_size=320)
    cfg["backbone"]["embed_dim"] = cfg["decode_head"]["embed_dim"] = 128
    seg = build_segmentor(cfg).eval()
    accelerate(seg, "cpu", kernels={"linear": "onednn", "attention": kernel})
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 320, 320), generator=g).float()
    ids = torch.randint(0, 4, (3, 400), generator=g)
    ids[1] = 0  # unreduced: 401 tokens after the injection point too
    x = seg.normalise(images)
    with torch.no_grad():
        out = seg.backbone(x, cluster_ids=ids)
        assert out.tokens_per_block[:, -1].tolist()[1] == 401 and out.merged.tolist() == [True, False, True]
        batched = seg.decode_head(out.features)
        for b in range(3):
            alone = seg.decode_head(seg.backbone(x[b : b + 1], cluster_ids=ids[b : b + 1]).features)
            # Row counts differ between the two runs, so GEMM summation orders may too (the plain model
            # differs by up to 2.5e-5 here, the accelerated one by 1.4e-5, on logits up to 1.7).
            torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-4, atol=1e-4)
            assert torch.equal(batched[b : b + 1].argmax(1), alone.argmax(1))


def test_forced_kinds_and_the_emulated_bf16_warning(capsys: pytest.CaptureFixture) -> None:
    """A tuple of kinds forces exactly those kernels, unmeasured; an unknown kind is refused; --amp on a CPU
    without bf16 instructions says, in one line, that it runs emulated (and nothing on CUDA or where oneDNN
    has bf16 kernels)."""
    seg = build_segmentor(tiny_cfg()).eval()
    counts = describe(accelerate(seg, "cpu", kernels=("onednn_linear", "head_by_head_attention")))
    assert counts["head_by_head_attention"] == (4 if ONEDNN else 0) and (counts["onednn_linear"] > 0) == ONEDNN
    with pytest.raises(ValueError, match=r"kernels \['fast'\]: expected some of onednn_linear, head_by_head_attention, "
                                         r"bmm_attention"):
        accelerate(seg, "cpu", kernels=("fast",))
    capsys.readouterr()
    emulated = not cpu.native_bf16()
    assert warn_if_emulated("cpu") is emulated and warn_if_emulated("cuda") is False
    err = capsys.readouterr().err.splitlines()
    assert err == ([f"clustvit: warning: this CPU has no bfloat16 instructions ({torch.backends.cpu.get_cpu_capability()}): "
                    "--amp runs emulated, several times slower than float32 here"] if emulated else [])


def test_amp_dtype_is_one_rule_per_device() -> None:
    """bfloat16 wherever the device has it; float16 (with loss scaling in training) only on older GPUs."""
    assert amp_dtype("cpu") == torch.bfloat16
    assert amp_dtype("cuda", cuda_bf16=True) == torch.bfloat16
    assert amp_dtype("cuda", cuda_bf16=False) == torch.float16


@needs_onednn
@pytest.mark.parametrize("kernel", list(cpu.ATTENTION_KERNELS))
@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_parity_fixture_with_each_attention_kernel(path: Path, kernel: str, monkeypatch: pytest.MonkeyPatch):
    """Every parity fixture (tests/test_parity.py's comparisons and tolerances) with oneDNN linears and each
    attention kernel pinned everywhere: whatever the tuner chooses on a host stays parity-tested."""
    pin = {"linear": "onednn", "attention": kernel}
    monkeypatch.setattr(parity, "accelerate", lambda model, device, **_: accelerate(model, device, kernels=pin))
    checks = parity.check_file(torch.load(path, weights_only=True), "cpu", accelerated=True)
    failed = [c.describe() for c in checks if not c.passed]
    assert checks and not failed, "; ".join(failed)
