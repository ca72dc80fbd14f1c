"""Token merging as pure tensor functions: plan once, then merge and regenerate with the plan.

Per image (the official single-image rule, applied to each image on its own):
  * one distinct cluster id over all its patch tokens -> nothing is reduced (1 + N tokens);
  * otherwise -> [cls, kept tokens in order, K cluster means] (1 + M + K tokens). Cluster j's token is
    the mean of the tokens with id j; an empty cluster gives an all-zero token that still takes part
    in attention, exactly as the official model does for an image run alone.

The reduced sequences of a batch are *packed* along one token axis (no padding): the linear layers,
most of the FLOPs, run on exactly the tokens that exist, and attention runs per sequence. An image's
result therefore never depends on what else is in the batch.

Host synchronisation: building a plan reads two numbers on the host, once (the packed length T and
the number of merged tokens P, which size the outputs). Everything else, the per-image lengths
included, stays a device tensor: every index is computed by scatter / cumsum, never by boolean
indexing, and cluster means are a batched matmul with a one-hot membership (no atomics on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class MergePlan:
    """Index bookkeeping for one batch. ``L = 1 + N`` (cls + patches), ``T`` = packed length."""

    num_clusters: int
    shape: tuple[int, int]  # (B, L)
    total: int  # T
    num_merged: int  # P, merged patch tokens over the batch (0: no image is reduced)
    reduced: Tensor  # (B,) bool: image b is reduced
    lengths: Tensor  # (B,) length of every image's sequence
    cu_seqlens: Tensor  # (B+1,) int32 offsets of the images' sequences along T
    members: Tensor  # (B, K, L) bool: token l of image b is merged into cluster k
    src_index: Tensor  # (T,) packed token -> row of the bank [x.flatten(0, 1); cluster means]
    merged_pos: Tensor  # (P,) flat positions (into B*L) of the merged patch tokens
    gather_index: Tensor  # (B*L,) packed position holding each token's value (its own, or its cluster's)

    @property
    def any_reduced(self) -> bool:
        return self.num_merged > 0

    @property
    def max_seqlen(self) -> int:
        """An upper bound on every packed sequence's length, known without the data: 1 + N + K."""
        return self.shape[1] + self.num_clusters

    def segments(self) -> Tensor:
        """(T,) image index of every packed token (per-image stochastic depth)."""
        B = self.shape[0]
        return torch.repeat_interleave(torch.arange(B, device=self.lengths.device), self.lengths, output_size=self.total)


def positions(mask: Tensor, count: int) -> Tensor:
    """Indices of the True entries of a 1-D bool ``mask``, in order, given how many there are.

    ``mask.nonzero()`` would read that count on the host; here it comes from the caller, so this is
    a cumsum and a scatter. Every False entry writes to one spare slot, dropped at the end.
    """
    rank = torch.cumsum(mask, 0) - 1
    slot = torch.where(mask, rank, count)
    out = torch.empty(count + 1, dtype=torch.long, device=mask.device)
    return out.scatter_(0, slot, torch.arange(mask.numel(), device=mask.device))[:count]



def exporting() -> bool:
    """Whether ``torch.export`` is tracing (``torch.compiler.is_exporting``; torch < 2.7 lacks it: False)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return is_exporting is not None and is_exporting()


def plan_merge(ids: Tensor, num_clusters: int) -> MergePlan:
    """Build the merge plan from cluster ids.

    Args:
        ids: (B, N) int64 cluster id of every patch token; 0 = keep, 1..K = merge into cluster id.
        num_clusters: K.

    Raises:
        ValueError: an id outside [0, K] (checked on the same host read as the sizes).
    """
    B, N = ids.shape
    K, L, dev = num_clusters, N + 1, ids.device
    # An image is reduced iff its tokens carry more than one distinct id.
    reduced = (ids != ids[:, :1]).any(dim=1)  # (B,)
    keep = torch.ones(B, L, dtype=torch.bool, device=dev)
    keep[:, 1:] = (ids == 0) | ~reduced[:, None]  # (B, L): cls always, all tokens of unreduced images
    n_copy = keep.sum(1)  # (B,)
    lengths = n_copy + K * reduced  # (B,)
    ends = torch.cumsum(lengths, 0)  # (B,) end of each image in the packed axis
    offsets = ends - lengths  # (B,) its start
    cluster_start = offsets + n_copy  # (B,) where its cluster tokens begin, after its kept tokens
    merged = ~keep  # (B, L); False for the cls column

    # The one host read: the sizes of the outputs (and the id range, for free).
    if ids.numel():
        sizes = torch.stack([lengths.sum(), merged.sum(), ids.min(), ids.max()])
    else:
        sizes = torch.stack([lengths.sum(), merged.sum(), ids.new_zeros(()), ids.new_zeros(())])
    T, P, lo, hi = sizes.tolist()  # (under torch.export: unbacked sizes, and the ids are arg-maxes)
    if exporting():
        # Tell the tracer what holds for the unbacked sizes: every image keeps at least its cls token.
        torch._check(T >= B)
        torch._check(P >= 0)
    elif lo < 0 or hi > K:
        raise ValueError(f"cluster ids must lie in [0, {K}], got [{lo}, {hi}]")

    # Packed position of every token: kept ones at image offset + rank among the image's kept tokens,
    # merged ones at their cluster's token, which sits after the image's kept tokens.
    rank = torch.cumsum(keep, 1) - 1  # (B, L)
    full_ids = torch.cat([ids.new_zeros(B, 1), ids], 1)  # (B, L), cls id 0
    cluster_pos = cluster_start[:, None] + full_ids - 1  # (B, L), valid where merged
    packed_pos = offsets[:, None] + rank  # (B, L), valid where keep
    gather_index = torch.where(keep, packed_pos, cluster_pos).flatten()  # (B*L,)

    # Source row of every packed token: tokens copy their row of x, cluster tokens read the means bank.
    flat = torch.arange(B * L, device=dev)
    src_index = torch.empty(T + 1, dtype=torch.long, device=dev)  # slot T: spare, for the writes to drop
    src_index.scatter_(0, torch.where(keep.flatten(), packed_pos.flatten(), T), flat)
    j = torch.arange(K, device=dev)
    cluster_slots = torch.where(reduced[:, None], cluster_start[:, None] + j, T)  # (B, K)
    src_index.scatter_(0, cluster_slots.flatten(), B * L + torch.arange(B * K, device=dev))

    members = merged[:, None, :] & (full_ids[:, None, :] == j[None, :, None] + 1)  # (B, K, L)
    cu_seqlens = torch.cat([lengths.new_zeros(1), ends]).to(torch.int32)  # (B+1,)
    return MergePlan(
        K, (B, L), T, P, reduced, lengths, cu_seqlens, members, src_index[:T], positions(merged.flatten(), P),
        gather_index,
    )


def cluster_means(x: Tensor, members: Tensor) -> Tensor:
    """Mean token of every cluster (an empty cluster gives zeros).

    A batched matmul with the one-hot membership: deterministic on every device (no scatter-add
    atomics), exported as a plain MatMul, and computed in x's own dtype even under autocast.

    Args:
        x: (B, L, C).
        members: (B, K, L) bool.

    Returns:
        (B, K, C).
    """
    with torch.autocast(x.device.type, enabled=False):
        sums = torch.bmm(members.to(x.dtype), x)  # (B, K, C)
    count = members.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)  # (B, K, 1)
    return sums / count


def merge(x: Tensor, plan: MergePlan) -> Tensor:
    """Reduce full sequences to the packed short sequence.

    Args:
        x: (B, L, C) tokens at the injection point (cls first).

    Returns:
        (1, T, C) packed [cls, kept..., cluster means...] of every image.
    """
    B, L, C = x.shape
    bank = torch.cat([x.reshape(B * L, C), cluster_means(x, plan.members).reshape(-1, C)])  # (B*L + B*K, C)
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
