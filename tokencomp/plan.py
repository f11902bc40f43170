"""What a strategy returns (a `Plan`) and the one place a plan is applied to `VisualTokens`.

Strategies are pure functions from tensors to a plan (STYLE.md section 1); they never build
`VisualTokens` themselves. Applying a plan is written once, here, so every strategy gets the same
position rules:

- a kept row keeps its pos, time, weight and members unchanged;
- a merged row's pos is its *earliest* member in (t, h, w) order (the representative), its time
  is that member's tubelet time, weight = sum of the absorbed weights, members = all absorbed
  original positions, embeds = weight-weighted average of the absorbed embeddings;
- the output is sorted in original (t, h, w) order.
A dropped row may afterwards be *counted* on a kept row (`absorb_dropped`): only that row's
weight grows (weight >= its members then), its embedding and position stay its own.
Because input rows already follow the earliest-member rule, the earliest member of a group is
the smallest input pos in it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from encoders.tokens import Members, VisualTokens
from kernels.merge import bipartite_match


@dataclass(frozen=True)
class Plan:
    """dest: [N] int64; for each input row, the label of the output row it goes to, -1 = dropped.

    Rows sharing a label are merged; labels are arbitrary non-negative ints (only equality counts).
    """

    dest: torch.Tensor

    def __post_init__(self):
        if self.dest.dtype != torch.int64 or self.dest.ndim != 1:
            raise ValueError(f"Plan.dest must be int64 [N], got {self.dest.dtype} {tuple(self.dest.shape)}")
        if self.dest.numel() and int(self.dest.min()) < -1:
            raise ValueError(f"Plan.dest labels must be >= -1, got min {int(self.dest.min())}")

    @staticmethod
    def keep(index: torch.Tensor, n: int) -> "Plan":
        """Keep rows `index` ([K] int64 or [N] bool) of `n`, drop the rest."""
        dest = torch.full((n,), -1, dtype=torch.int64)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = index.to(torch.int64).cpu()
        dest[index] = index
        return Plan(dest)

    @staticmethod
    def identity(n: int) -> "Plan":
        return Plan(torch.arange(n, dtype=torch.int64))

    def num_outputs(self) -> int:
        kept = self.dest[self.dest >= 0]
        return int(torch.unique(kept).numel())


def apply_plan(tokens: VisualTokens, plan: Plan) -> VisualTokens:
    """Carry out `plan` on `tokens` (one video or many; a plan must not merge across videos).

    tokens: N rows sorted in original order; plan.dest: [N]. Returns the output rows sorted.
    """
    n = len(tokens)
    dest = plan.dest.cpu()
    if dest.shape != (n,):
        raise ValueError(f"apply_plan: plan has {dest.shape[0]} rows, tokens have {n}")
    rows = (dest >= 0).nonzero().flatten()
    labels, group = torch.unique(dest[rows], return_inverse=True)  # group: [R] output row per kept row
    n_out = labels.numel()
    if n_out == rows.numel():  # nothing merged: a plain selection keeps members as they are
        return take_rows(tokens, rows[torch.argsort(_order_key(tokens)[rows], stable=True)])

    device = tokens.embeds.device
    vid = tokens.video_id.cpu()[rows]
    first_vid = torch.full((n_out,), -1, dtype=torch.int64).scatter_reduce(0, group, vid, "amax", include_self=False)
    if bool((first_vid[group] != vid).any()):
        raise ValueError("apply_plan: a plan merged tokens of different videos")
    # Representative = earliest member: the smallest sort key among the group's rows.
    key = _order_key(tokens)[rows]
    rep_key = torch.full((n_out,), torch.iinfo(torch.int64).max, dtype=torch.int64)
    rep_key = rep_key.scatter_reduce(0, group, key, "amin", include_self=True)
    is_rep = key == rep_key[group]
    rep_rows = torch.full((n_out,), -1, dtype=torch.int64)
    # Equal keys cannot happen in one video (positions are unique); take the first row anyway.
    rep_rows = rep_rows.scatter_reduce(0, group[is_rep], rows[is_rep], "amax", include_self=True)

    weight = tokens.weight.cpu()[rows]
    out_weight = torch.zeros(n_out, dtype=torch.int64).index_add_(0, group, weight)
    w = weight.to(device=device, dtype=torch.float32)[:, None]
    g = group.to(device)
    sums = torch.zeros(n_out, tokens.embeds.shape[1], dtype=torch.float32, device=device)
    sums.index_add_(0, g, tokens.embeds[rows.to(device)].float() * w)
    embeds = (sums / out_weight.to(device=device, dtype=torch.float32)[:, None]).to(tokens.embeds.dtype)

    members = _merge_members(tokens, rows, group, n_out)
    out = replace(
        take_rows(replace(tokens, members=None), rep_rows),
        embeds=embeds,
        weight=out_weight.to(tokens.weight.device),
        members=members,
    )
    return take_rows(out, torch.argsort(_order_key(out), stable=True))


DROPPED_MODES: tuple[str, ...] = ("absorb", "drop")


def absorb_dropped(tokens: VisualTokens, plan: Plan, out: VisualTokens) -> VisualTokens:
    """Count each row `plan` dropped on the output row most like it: `out` with weights added.

    tokens: the rows the plan was made for; out: `apply_plan(tokens, plan)`. Each dropped row's
    weight goes to the output row of the same video with the highest cosine similarity of
    embeddings (`kernels.merge.bipartite_match`; lowest row on ties). Only `weight` changes: a
    kept row keeps its embedding, position, time and members, it now *stands for* the dropped
    rows that looked like it. Total weight is conserved, so the LLM's proportional attention
    (`pipeline/weighting.py`) gives a kept background row the attention mass of the background
    it replaced, instead of shrinking the background to the few rows kept.

    Why not merge them (average embeddings, earliest position)? A kept moving object would take
    the position and part of the look of whatever background it absorbed; counting keeps both.
    A video none of whose rows survived keeps nothing to count on (its weight is lost).
    """
    dropped = (plan.dest.cpu() < 0).nonzero().flatten()
    if dropped.numel() == 0 or len(out) == 0:
        return out
    _, nearest = bipartite_match(
        tokens.embeds[dropped.to(tokens.embeds.device)], out.embeds,
        tokens.video_id[dropped.to(tokens.video_id.device)], out.video_id,
    )
    nearest = nearest.cpu()
    found = nearest >= 0
    add = torch.zeros(len(out), dtype=torch.int64).index_add_(0, nearest[found], tokens.weight.cpu()[dropped][found])
    return replace(out, weight=out.weight + add.to(out.weight.device))


def take_rows(tokens: VisualTokens, index: torch.Tensor) -> VisualTokens:
    """`tokens.select(index)` with the members table gathered in one vectorized step.

    index: [K] int64 rows in the order wanted. (`Members.select` builds one tensor per row, which
    costs seconds at 64k rows.)
    """
    index = index.to(torch.int64).cpu()
    base = replace(tokens, members=None).select(index)
    if tokens.members is None:
        return base
    off = tokens.members.offsets.cpu()
    lens = (off[1:] - off[:-1])[index]
    idx = torch.repeat_interleave(off[:-1][index], lens) + _ranges(lens)
    offsets = torch.zeros(index.numel() + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lens, 0)
    return replace(base, members=Members(pos=tokens.members.pos.cpu()[idx], offsets=offsets))


def _order_key(tokens: VisualTokens) -> torch.Tensor:
    """[N] int64 key that orders rows by (video, t, h, w), as `VisualTokens.sort_index` does."""
    g = int(tokens.grids.max()) + 1 if tokens.grids.numel() else 1
    pos, vid = tokens.pos.cpu(), tokens.video_id.cpu()
    return ((vid * g + pos[:, 0]) * g + pos[:, 1]) * g + pos[:, 2]


def _merge_members(tokens: VisualTokens, rows: torch.Tensor, group: torch.Tensor, n_out: int) -> Members:
    """CSR members of the output rows: all original positions of the rows merged into each."""
    if tokens.members is None:
        src_pos = tokens.pos.cpu()[rows]
        src_len = torch.ones(rows.numel(), dtype=torch.int64)
    else:
        off = tokens.members.offsets.cpu()
        src_len = (off[1:] - off[:-1])[rows]
        # Gather each kept row's member block, in row order.
        starts = off[:-1][rows]
        idx = torch.repeat_interleave(starts, src_len) + _ranges(src_len)
        src_pos = tokens.members.pos.cpu()[idx]
    # Sort member blocks by output row (stable, keeps original order inside a group).
    row_of_member = torch.repeat_interleave(group, src_len)
    order = torch.argsort(row_of_member, stable=True)
    counts = torch.zeros(n_out, dtype=torch.int64).index_add_(0, group, src_len)
    offsets = torch.zeros(n_out + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(counts, 0)
    return Members(pos=src_pos[order].contiguous(), offsets=offsets)


def _ranges(lengths: torch.Tensor) -> torch.Tensor:
    """[sum(lengths)] int64: 0..len-1 for each length, concatenated."""
    total = int(lengths.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths
    return torch.arange(total, dtype=torch.int64) - torch.repeat_interleave(starts, lengths)


def select_top(scores: torch.Tensor, tubelet: torch.Tensor, floors: torch.Tensor, k: int) -> torch.Tensor:
    """Global top-k with a per-tubelet floor: [K'] int64 kept row indices, ascending, K' = min(k, N).

    scores: [N] float (higher = keep); tubelet: [N] int64 tubelet index of each row; floors: [T]
    int64 minimum rows per tubelet (sum <= k). Each tubelet first keeps its floor[t] best rows, the
    rest of the budget goes to the best remaining rows anywhere (this is what lets a static stretch
    hand its tokens to a busy one). Ties are spread round-robin over tubelets, then go to the
    earlier row, so a fully static video still spends its budget evenly in time.
    """
    n = scores.numel()
    k = min(int(k), n)
    if k <= 0:
        return torch.zeros(0, dtype=torch.int64)
    scores = torch.nan_to_num(scores.detach().float().cpu(), nan=float("-inf"))
    tubelet = tubelet.cpu()
    order = torch.argsort(-scores, stable=True)  # best first, earlier row on ties
    # Rank of each row inside its tubelet, in score order.
    t_sorted = tubelet[order]
    by_t = torch.argsort(t_sorted, stable=True)
    t_grouped = t_sorted[by_t]
    first = torch.ones_like(t_grouped, dtype=torch.bool)
    first[1:] = t_grouped[1:] != t_grouped[:-1]
    start_idx = torch.cummax(torch.where(first, torch.arange(n), torch.zeros(n, dtype=torch.int64)), 0).values
    rank_grouped = torch.arange(n) - start_idx
    rank = torch.empty(n, dtype=torch.int64)
    rank[order[by_t]] = rank_grouped
    forced = rank < floors.cpu()[tubelet]
    n_forced = int(forced.sum())
    if n_forced > k:
        raise ValueError(f"select_top: floors keep {n_forced} rows, more than k={k}")
    # The rest by score; ties spread round-robin over tubelets (rank in tubelet), then earlier row.
    spread = torch.argsort(rank, stable=True)
    spread = spread[torch.argsort(-scores[spread], stable=True)]
    rest = spread[~forced[spread]][: k - n_forced]
    keep = torch.cat([forced.nonzero().flatten(), rest])
    return torch.sort(keep).values


def tubelet_capacity(pos: torch.Tensor, num_tubelets: int) -> torch.Tensor:
    """[T] int64 rows present per tubelet. pos: [N, 3] int64 (t, h, w)."""
    return torch.bincount(pos[:, 0].cpu(), minlength=num_tubelets)[:num_tubelets].to(torch.int64)
