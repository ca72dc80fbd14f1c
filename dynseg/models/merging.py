"""Token merging as pure tensor functions: plan once, then merge and regenerate with the plan.

Per image (the official single-image rule, applied to each image on its own):
  * one distinct cluster id over all its patch tokens -> nothing is reduced (1 + N tokens);
  * otherwise -> [cls, kept tokens in order, K cluster means] (1 + M + K tokens). Cluster j's token is
    the mean of the tokens with id j; an empty cluster gives an all-zero token that still takes part
    in attention, exactly as the official model does for an image run alone.

The reduced sequences of a batch are *packed* along one token axis (no padding): the linear layers,
most of the FLOPs, run on exactly the tokens that exist, and attention runs per sequence. An image's
result therefore never depends on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass
class MergePlan:
    """Index bookkeeping for one batch. ``L = 1 + N`` (cls + patches), ``T`` = packed length."""

    num_clusters: int
    shape: tuple[int, int]  # (B, L)
    reduced: Tensor  # (B,) bool: image b is reduced
    lengths: Tensor  # (B,) length of every image's sequence
    segments: Tensor  # (T,) image index of every packed token (per-image stochastic depth)
    src_index: Tensor  # (T,) packed token -> row of the bank [x.flatten(0, 1); cluster means]
    merged_pos: Tensor  # (P,) flat positions (into B*L) of the merged patch tokens
    merged_slot: Tensor  # (P,) their cluster slot b*K + (id - 1)
    slot_count: Tensor  # (B*K,) members per cluster slot (0 = empty cluster)
    gather_index: Tensor  # (B*L,) packed position holding each token's value (its own, or its cluster's)

    @property
    def any_reduced(self) -> bool:
        return bool(self.reduced.any())

    @cached_property
    def seqlens(self) -> list[int]:
        """``lengths`` as Python ints (they size the attention loop); read once, only when needed."""
        return self.lengths.tolist()


def plan_merge(ids: Tensor, num_clusters: int) -> MergePlan:
    """Build the merge plan from cluster ids.

    Args:
        ids: (B, N) int64 cluster id of every patch token; 0 = keep, 1..K = merge into cluster id.
        num_clusters: K.
    """
    B, N = ids.shape
    K, L, dev = num_clusters, N + 1, ids.device
    # Skipped under torch.export: a data-dependent check cannot be traced (the ids are arg-maxes there).
    if ids.numel() and not torch.compiler.is_exporting() and (int(ids.min()) < 0 or int(ids.max()) > K):
        raise ValueError(f"cluster ids must lie in [0, {K}], got [{int(ids.min())}, {int(ids.max())}]")
    # An image is reduced iff its tokens carry more than one distinct id.
    reduced = (ids != ids[:, :1]).any(dim=1)  # (B,)
    keep = torch.ones(B, L, dtype=torch.bool, device=dev)
    keep[:, 1:] = (ids == 0) | ~reduced[:, None]  # (B, L): cls always, all tokens of unreduced images
    n_copy = keep.sum(1)  # (B,)
    seqlens_t = n_copy + K * reduced  # (B,)
    offsets = torch.cumsum(seqlens_t, 0) - seqlens_t  # (B,) start of each image in the packed axis
    T = seqlens_t.sum().item()  # .item(), not int(): traceable as an unbacked size under torch.export
    if torch.compiler.is_exporting():  # (only then: torch._check's first call imports the symbolic-shape machinery)
        torch._check(T >= B)  # every image keeps at least its cls token: tells the tracer T is a non-empty size

    # Packed position of every kept token: image offset + rank among the image's kept tokens.
    rank = torch.cumsum(keep, 1) - 1  # (B, L)
    packed_pos = offsets[:, None] + rank  # (B, L), valid where keep
    flat = torch.arange(B * L, device=dev).view(B, L)
    src_index = torch.empty(T, dtype=torch.long, device=dev)
    src_index[packed_pos[keep]] = flat[keep]

    # Cluster tokens sit after the kept tokens of reduced images; they read the means bank.
    b_red = reduced.nonzero().flatten()  # (R,)
    j = torch.arange(K, device=dev)
    cluster_packed = (offsets + n_copy)[b_red, None] + j  # (R, K)
    src_index[cluster_packed.flatten()] = B * L + (b_red[:, None] * K + j).flatten()

    merged = ~keep  # (B, L); False for the cls column
    merged_pos = flat[merged]  # (P,)
    b_of = merged_pos // L
    merged_slot = b_of * K + ids.view(B, N)[merged[:, 1:]] - 1  # (P,)
    if use_membership_matmul(dev):
        slot_count = members(merged_slot, B * K).sum(1)  # (B*K,); not bincount: its size would depend on the data
    else:
        slot_count = torch.bincount(merged_slot, minlength=B * K)  # (B*K,)

    gather_index = packed_pos.flatten().clone()  # (B*L,)
    gather_index[merged_pos] = (offsets + n_copy)[b_of] + (merged_slot - b_of * K)
    segments = torch.repeat_interleave(torch.arange(B, device=dev), seqlens_t)  # (T,)
    return MergePlan(
        K, (B, L), reduced, seqlens_t, segments, src_index, merged_pos, merged_slot, slot_count, gather_index
    )


def use_membership_matmul(device: torch.device) -> bool:
    """Cluster sums as a membership-matrix matmul (export, GPU) or an ``index_add`` (eager CPU).

    The matmul has no atomics, so it is deterministic on GPU, and it exports without a ScatterND-add
    (onnxruntime's multi-threaded kernel loses updates on repeated indices). On CPU its skinny
    (B*K, P) x (P, C) GEMM is slow: at batch 8 of 512² images ``index_add`` is ~8x faster.
    """
    return torch.compiler.is_exporting() or device.type != "cpu"


def members(slots: Tensor, num_slots: int) -> Tensor:
    """(num_slots, P) bool: token p belongs to cluster slot s."""
    return slots[None, :] == torch.arange(num_slots, device=slots.device)[:, None]


def cluster_sums(tokens: Tensor, slots: Tensor, num_slots: int) -> Tensor:
    """Sum the rows of ``tokens`` (P, C) into ``num_slots`` slots given by ``slots`` (P,) -> (num_slots, C)."""
    if use_membership_matmul(tokens.device):
        return members(slots, num_slots).to(tokens.dtype) @ tokens
    return tokens.new_zeros(num_slots, tokens.shape[1]).index_add_(0, slots, tokens)


def merge(x: Tensor, plan: MergePlan) -> Tensor:
    """Reduce full sequences to the packed short sequence.

    Args:
        x: (B, L, C) tokens at the injection point (cls first).

    Returns:
        (1, T, C) packed [cls, kept..., cluster means...] of every image.
    """
    B, L, C = x.shape
    flat = x.reshape(B * L, C)
    sums = cluster_sums(flat[plan.merged_pos], plan.merged_slot, B * plan.num_clusters)  # (B*K, C)
    means = sums / plan.slot_count.clamp(min=1).to(flat.dtype)[:, None]  # empty cluster -> zero token
    bank = torch.cat([flat, means])  # (B*L + B*K, C)
    return bank[plan.src_index][None]  # (1, T, C)


def unmerge(y: Tensor, plan: MergePlan) -> Tensor:
    """Give every full-length position the packed value that stands for it (its own, or its cluster's).

    Args:
        y: (1, T, C) packed sequence.

    Returns:
        (B*L, C); rows ``plan.merged_pos`` hold their cluster token's output (before regeneration).
    """
    return y[0][plan.gather_index]


def regenerate(y: Tensor, x_inj: Tensor, plan: MergePlan, regenerator: torch.nn.Module) -> Tensor:
    """Rebuild full-length sequences from the packed sequence.

    Args:
        y: (1, T, C) current packed sequence.
        x_inj: (B, L, C) tokens at the injection point, before merging.
        regenerator: maps concat[token before merging, its cluster token's output] (P, 2C) -> (P, C).

    Returns:
        (B, L, C): cls and kept tokens copied, merged tokens *replaced* by the regenerator (no residual).
    """
    B, L, C = x_inj.shape
    full = unmerge(y, plan)  # (B*L, C)
    pos = plan.merged_pos  # may be empty (no image reduced): the MLP then runs on 0 rows
    new = regenerator(torch.cat([x_inj.reshape(B * L, C)[pos], full[pos]], dim=-1))  # (P, C)
    return full.index_copy(0, pos, new.to(full.dtype)).view(B, L, C)
