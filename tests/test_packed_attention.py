"""Packed variable-length attention as one op, the merge's host reads, and compiling without recompiles.

The CUDA kernels themselves run only on a GPU (``tools/device_check.py``); here every device-independent
piece runs on CPU: the padded implementation the GPU uses for float32, the op's fake (meta) kernel and
registration (``torch.library.opcheck``), autograd, and the number of host reads of a forward.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from test_models import tiny_cfg
from torch.overrides import TorchFunctionMode

from clustvit.models import attention as A
from clustvit.models.build import build_segmentor
from clustvit.models.merging import plan_merge
from clustvit.models.oracle import seg_cluster_ids


def reference(qkv: torch.Tensor, lengths: list[int], heads: int) -> torch.Tensor:
    """Each sequence on its own through SDPA."""
    outs = []
    for part in qkv.split(lengths):
        q, k, v = part.view(part.shape[0], 3, heads, -1).permute(1, 2, 0, 3)  # 3 x (h, l, d)
        outs.append(F.scaled_dot_product_attention(q, k, v).transpose(0, 1).flatten(1))
    return torch.cat(outs)


@pytest.mark.parametrize("lengths", [[7, 12, 11], [10, 10, 10], [1, 30], [30]])
def test_packed_attention_paths_equal_attention_per_sequence(lengths: list[int]):
    torch.manual_seed(0)
    qkv = torch.randn(sum(lengths), 3 * 16, dtype=torch.float64)
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    ref = reference(qkv, lengths, 2)
    for out in (A.packed_attention(qkv, cu, 40, 2), A.padded_attention(qkv, cu, 40, 2),
                A.padded_attention(qkv, cu, max(lengths), 2)):  # the bound need not be tight
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def cpu_varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k):
    """A CPU kernel with ``torch.nn.attention.varlen.varlen_attn``'s interface and semantics: (T, h, d)
    inputs, int32 offsets, every sequence shorter than the bounds, attention within each sequence."""
    assert cu_q.dtype == cu_k.dtype == torch.int32 and torch.equal(cu_q, cu_k)
    assert q.dim() == 3 and q.stride(-1) == 1 and k.shape == v.shape == q.shape
    bounds = cu_q.tolist()
    assert max(b - a for a, b in zip(bounds, bounds[1:])) <= min(max_q, max_k) and bounds[-1] == q.shape[0]
    out = [F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v))).transpose(0, 1)
           for a, b in zip(bounds, bounds[1:])]
    return torch.cat(out)  # (T, h, d)


def test_the_cuda_varlen_call_lays_out_heads_and_offsets_as_the_kernel_expects():
    """The CUDA half-precision path's unpacking (views of qkv, int32 offsets, the bound) and repacking,
    through a CPU kernel with the fused one's interface: equal to attention per sequence."""
    torch.manual_seed(0)
    lengths = [7, 12, 1, 11]
    qkv = torch.randn(sum(lengths), 3 * 24, dtype=torch.float64)
    cu = torch.tensor([0] + lengths).cumsum(0)  # int64, as a caller may pass
    out = A.varlen_packed_attention(qkv, cu, 40, 3, cpu_varlen_attn)
    torch.testing.assert_close(out, reference(qkv, lengths, 3), rtol=1e-12, atol=1e-12)


def test_packed_attention_op_registration_and_gradients():
    """The custom op's fake kernel and schema agree with its real one (what torch.compile relies on),
    and the autograd path's gradients are those of attention per sequence."""
    torch.manual_seed(0)
    qkv = torch.randn(30, 48)
    cu = torch.tensor([0, 7, 19, 30], dtype=torch.int32)
    torch.library.opcheck(A._packed_attention_op, (qkv, cu, 20, 2),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    x = qkv.double().requires_grad_()
    A.packed_attention(x, cu, 20, 2).square().sum().backward()
    y = qkv.double().requires_grad_()
    reference(y, [7, 12, 11], 2).square().sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-10)


class HostReads(TorchFunctionMode):
    """Records the calls that read tensor data on the host (a GPU synchronisation each)."""

    READS = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "nonzero", "bincount", "unique",
             "masked_select", "repeat_interleave"}

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in self.READS and not (name == "repeat_interleave" and "output_size" in (kwargs or {})):
            self.reads[name] += 1
        if name in ("__getitem__", "__setitem__"):  # a boolean mask index has a data-dependent size
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                self.reads["bool index"] += 1
        return func(*args, **(kwargs or {}))


def test_forward_reads_the_host_once():
    """A ClustViT Segmenter forward on a packed batch reads the device once: the merge plan's sizes."""
    torch.manual_seed(0)
    seg = build_segmentor(tiny_cfg()).eval()
    images = torch.rand(3, 3, 64, 64) * 255
    masks = torch.randint(0, 4, (3, 4, 4)).repeat_interleave(16, 1).repeat_interleave(16, 2)  # (3, 64, 64)
    masks[1] = 2  # one unreduced image in the batch
    with torch.no_grad():
        for oracle in (False, True):
            with HostReads() as mode:
                out = seg(images, seg_cluster_ids(seg, masks) if oracle else None)  # ids computed inside too
            assert mode.reads == Counter(tolist=1), mode.reads
        assert out.backbone.merged.tolist() == [True, False, True]  # (the oracle run) a packed batch


def test_merge_plan_sizes_and_id_check_come_from_one_read():
    ids = torch.tensor([[0, 2, 2, 0, 1, 0], [1, 1, 1, 1, 1, 1]])
    with HostReads() as mode:
        plan = plan_merge(ids, num_clusters=3)
        plan.segments()
    assert mode.reads == Counter(tolist=1)
    assert (plan.total, plan.num_merged, plan.max_seqlen) == (14, 3, 10)
    assert plan.segments().tolist() == [0] * 7 + [1] * 7


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_compiled_backbone_does_not_recompile_per_merged_length(training: bool):
    """torch.compile of the backbone: batches of different merged lengths reuse the graphs compiled
    for the second length seen (automatic dynamic shapes), so at most 2 compilations of each graph;
    in training too (forward and backward, stochastic depth on)."""
    torch.manual_seed(0)
    seg = build_segmentor(tiny_cfg(drop_path_rate=0.1)).train(training)
    graphs: list[int] = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(seg.backbone, backend=counting_backend)
    x = seg.normalise(torch.rand(2, 3, 64, 64) * 255)
    gen = torch.Generator().manual_seed(0)
    lengths, per_batch = set(), []
    with torch.set_grad_enabled(training):
        for keep in (2, 5, 8, 11, 3, 9):  # kept tokens of the first image: a new packed length every batch
            ids = torch.randint(1, 4, (2, 16), generator=gen)
            ids[0, :keep] = 0
            out = compiled(x, cluster_ids=ids)
            if training:  # stochastic depth draws differ between the two runs: compare gradients' presence
                out.features[0].square().mean().backward()
                assert seg.backbone.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
            else:
                ref = seg.backbone(x, cluster_ids=ids)
                torch.testing.assert_close(out.features[0], ref.features[0], rtol=1e-5, atol=1e-5)
            lengths.add(tuple(out.tokens_per_block[:, -1].tolist()))
            per_batch.append(len(graphs))
    assert len(lengths) == 6
    first = per_batch[0]  # graphs of one forward (split where the plan reads its sizes)
    assert first >= 1 and per_batch[-1] <= 2 * first and per_batch[2:] == [per_batch[1]] * 4, per_batch
