"""`tome`: merge similar tokens instead of dropping them (bipartite soft matching).

Idea: ToMe, Bolya et al., "Token Merging: Your ViT But Faster" (ICLR 2023), applied to the
encoder's output tokens and extended over time as video ToMe variants do (e.g. TESTA, Ren et al.
2023: temporal and spatial aggregation). Own code.

One round: split the current tokens into sets A and B, match every A token to its most similar B
token (`kernels.merge.bipartite_match`, cosine similarity), and merge the best-scoring pairs.
- spatial round: A and B alternate inside each tubelet (odd/even rank in raster order), matching
  only within the tubelet;
- temporal round: present tubelets are paired (u0,u1), (u2,u3), ... (or (u1,u2), ... on alternate
  temporal rounds) and the later tubelet's tokens (A) match any token of the earlier one (B).
Each round computes both kinds and carries out the one whose best merges are more similar, at most
half of the merges still needed (so neither kind hogs the budget; at least 10% of the rows, so
the tail takes no tiny rounds), until the target is reached.
A merge never takes a tubelet below its floor. Merged rows are size-weighted averages; the
representative position is the earliest member (see `tokencomp.plan`).
"""

from __future__ import annotations

import math

import torch

from kernels.merge import bipartite_match
from tokencomp.plan import Plan
from tokencomp.registry import StrategyInput, register_strategy

ROUND_FRACTION = 0.5  # merges per round: at most this fraction of those still needed ...
MIN_ROUND = 0.1  # ... or this fraction of the current rows, whichever is more


def _rank_in_tubelet(tub: torch.Tensor) -> torch.Tensor:
    """[n] sorted tubelet ids -> [n] 0-based index of each row inside its tubelet."""
    n = tub.numel()
    first = torch.ones(n, dtype=torch.bool)
    first[1:] = tub[1:] != tub[:-1]
    start = torch.cummax(torch.where(first, torch.arange(n), torch.zeros(n, dtype=torch.int64)), 0).values
    return torch.arange(n) - start


def _split(kind: str, tub: torch.Tensor, offset: int):
    """Sets for one round: (a_rows, b_rows, a_group, b_group), rows of the current clusters."""
    if kind == "spatial":
        is_a = _rank_in_tubelet(tub) % 2 == 1
        group = tub
        in_round = torch.ones_like(is_a)
    else:
        present = torch.unique(tub)
        j = torch.searchsorted(present, tub) - offset
        in_round = j >= 0
        is_a = in_round & (j % 2 == 1)
        group = j.clamp_min(0) // 2
    a = (in_round & is_a).nonzero().flatten()
    b = (in_round & ~is_a).nonzero().flatten()
    return a, b, group[a], group[b]


def _propose(kind, unit, tub, floors, offset):
    """Allowed merges of one kind, best first: (a_rows, b_rows, scores). unit: [n, D] unit rows."""
    a, b, ga, gb = _split(kind, tub, offset)
    if a.numel() == 0 or b.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty, torch.zeros(0)
    dev = unit.device
    score, idx = bipartite_match(unit[a.to(dev)], unit[b.to(dev)], ga.to(dev), gb.to(dev), normalized=True)
    score, idx = score.cpu(), idx.cpu()
    ok = idx >= 0
    a, bm, score = a[ok], b[idx[ok]], score[ok]
    # Floors: tubelet t may lose at most (clusters in t) - floors[t] rows; its most similar A rows go first.
    order = torch.argsort(-score, stable=True)
    a, bm, score = a[order], bm[order], score[order]
    ta = tub[a]
    by_t = torch.argsort(ta, stable=True)
    rank = torch.empty_like(ta)
    rank[by_t] = _rank_in_tubelet(ta[by_t])
    allowance = torch.bincount(tub, minlength=floors.numel())[: floors.numel()] - floors
    keep = rank < allowance[ta]
    return a[keep], bm[keep], score[keep]


def tome_groups(embeds: torch.Tensor, pos: torch.Tensor, weight: torch.Tensor, floors: torch.Tensor, k: int) -> torch.Tensor:
    """[N, D], [N, 3] sorted (t, h, w), [N] weights, [T] floors, k -> [N] int64 cluster label per row.

    At most k distinct labels (sum(floors) <= k); rows with one label are merged by `apply_plan`.
    """
    n = embeds.shape[0]
    assign = torch.arange(n)
    if n <= k:
        return assign
    g = int(pos.max()) + 1
    emb = embeds.float()
    w = weight.to(device=emb.device, dtype=torch.float32)
    key = (pos[:, 0] * g + pos[:, 1]) * g + pos[:, 2]  # rows arrive sorted by key
    temporal_rounds, stalled = 0, 0
    while emb.shape[0] > k:
        tub = key // (g * g)
        need = emb.shape[0] - k
        # Half of what is still needed, but never tiny rounds at the tail (each round costs a full match).
        cap = need if stalled else min(need, max(math.ceil(need * ROUND_FRACTION), math.ceil(MIN_ROUND * emb.shape[0])))
        offset = temporal_rounds % 2
        best = None
        unit = torch.nn.functional.normalize(emb, dim=1)  # once per round, shared by both proposals
        for kind in ("temporal", "spatial"):
            a, b, s = _propose(kind, unit, tub, floors, offset)
            take = min(cap, a.numel())
            if take and (best is None or float(s[:take].mean()) > best[3]):
                best = (kind, a[:take], b[:take], float(s[:take].mean()))
        if best is None:
            stalled += 1
            temporal_rounds += 1  # try the other temporal pairing
            if stalled > 2:
                raise RuntimeError(f"tome: no allowed merge left at {emb.shape[0]} rows, target {k}, floors {floors.sum()}")
            continue
        kind, a, b, _ = best
        stalled = 0
        temporal_rounds += kind == "temporal"
        emb, w, key, assign = _merge(emb, w, key, assign, a, b)
    return assign


def _merge(emb, w, key, assign, a, b):
    """Merge rows a into rows b; returns the new (emb, w, key, assign), clusters sorted by key.

    Only the clusters that receive merges are recomputed (size-weighted mean); the rest are copied.
    """
    n = emb.shape[0]
    into = torch.arange(n)
    into[a] = b
    survives = torch.ones(n, dtype=torch.bool)
    survives[a] = False
    new_index = torch.cumsum(survives.to(torch.int64), 0) - 1
    cmap = new_index[into]  # old cluster -> new cluster
    dev = emb.device
    keep_rows = survives.nonzero().flatten()
    emb_new, w_new = emb[keep_rows.to(dev)], w[keep_rows.to(dev)]
    targets, inv = torch.unique(cmap[a], return_inverse=True)
    a_dev, t_dev, inv_dev = a.to(dev), targets.to(dev), inv.to(dev)
    add_w = torch.zeros(targets.numel(), dtype=torch.float32, device=dev).index_add_(0, inv_dev, w[a_dev])
    add_e = torch.zeros(targets.numel(), emb.shape[1], dtype=torch.float32, device=dev)
    add_e.index_add_(0, inv_dev, emb[a_dev] * w[a_dev, None])
    tw = w_new[t_dev] + add_w
    emb_new[t_dev] = (emb_new[t_dev] * w_new[t_dev, None] + add_e) / tw[:, None]
    w_new[t_dev] = tw
    key_new = key[keep_rows].scatter_reduce(0, cmap[a], key[a], "amin")
    assign = cmap[assign]
    if key_new.numel() > 1 and bool((key_new[1:] < key_new[:-1]).any()):  # a spatial merge moved a rep
        perm = torch.argsort(key_new)
        inv_perm = torch.empty_like(perm)
        inv_perm[perm] = torch.arange(perm.numel())
        return emb_new[perm.to(dev)], w_new[perm.to(dev)], key_new[perm], inv_perm[assign]
    return emb_new, w_new, key_new, assign


@register_strategy("tome")
def merge_similar(x: StrategyInput) -> Plan:
    """Merge rows down to `x.target` clusters (spatial and temporal bipartite matching)."""
    return Plan(tome_groups(x.embeds, x.pos, x.weight, x.floors, x.target))
