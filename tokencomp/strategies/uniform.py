"""`uniform` and `uniform-t`: content-blind baselines every other strategy must beat.

- `uniform`: spatial pooling. Each tubelet gets an even share of the budget (at least its floor;
  `tokencomp.budget.allocate` with equal scores) and its cells are averaged in a regular grid of
  blocks with at most that many blocks, as pooled video LLM inputs do (e.g. LLaVA-Video's 2x2
  pooling, PLLaVA's adaptive pooling). A block becomes one merged row at its earliest cell.
- `uniform-t`: temporal stride. Keep every k-th tubelet in full (frame subsampling, the usual
  "fewer frames" baseline); k is the smallest stride whose tubelets fit the budget, and a tubelet
  larger than the budget is pooled spatially. This one skips tubelets by design, so it does not
  honour the per-tubelet floors.
Own code.
"""

from __future__ import annotations

import math

import torch

from tokencomp.budget import allocate
from tokencomp.plan import Plan
from tokencomp.registry import StrategyInput, register_strategy


def block_bands(count: int, h: int, w: int) -> torch.Tensor:
    """Split an H x W grid into exactly `count` blocks (1 <= count <= H*W): [bands] blocks per band.

    The grid is cut into horizontal bands (about sqrt(count * H / W) of them, so blocks come out
    roughly square); band i is cut into counts[i] column blocks, the counts differing by at most 1.
    """
    bands = max(1, min(h, count, round(math.sqrt(count * h / w))))
    bands = max(bands, math.ceil(count / w))  # no band may need more blocks than it has columns
    per = torch.full((bands,), count // bands, dtype=torch.int64)
    per[: count % bands] += 1
    return per


def pool_labels(pos: torch.Tensor, counts: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[N, 3] positions, [T] blocks per tubelet -> [N] int64 block label, -1 where counts[t] == 0.

    A full tubelet with count c gets exactly c blocks (`block_bands`); cell (r, c) of tubelet t
    falls in band r * bands // H and column block c * per[band] // W. A tubelet with at least as
    many blocks as rows keeps every row; a sparse one fills at most its count of blocks.
    """
    labels = torch.full((pos.shape[0],), -1, dtype=torch.int64)
    for t in torch.unique(pos[:, 0]).tolist():
        rows = (pos[:, 0] == t).nonzero().flatten()
        count = int(counts[t])
        if count >= rows.numel():  # room for every row present: keep each as it is
            labels[rows] = (t * h + pos[rows, 1]) * w + pos[rows, 2]
            continue
        if count == 0:
            continue
        per = block_bands(count, h, w)
        band = pos[rows, 1] * per.numel() // h
        col = pos[rows, 2] * per[band] // w
        labels[rows] = (t * h + band) * w + col
    return labels


@register_strategy("uniform")
def pool_uniform(x: StrategyInput) -> Plan:
    """Even share per tubelet (floors honoured), each tubelet pooled to a regular block grid."""
    t, h, w = x.grid
    capacity = torch.bincount(x.tubelet, minlength=t)[:t]
    counts = allocate(torch.ones(t, dtype=torch.float64), capacity, x.target, x.floors)
    # A sparse tubelet may fill fewer blocks than its count: pool what is there, never more.
    return Plan(pool_labels(x.pos, counts, h, w))


@register_strategy("uniform-t")
def stride_uniform(x: StrategyInput) -> Plan:
    """Every k-th tubelet (0, k, 2k, ...) in full; the smallest k that fits the budget."""
    t, h, w = x.grid
    present = torch.unique(x.tubelet)
    capacity = torch.bincount(x.tubelet, minlength=t)[:t]
    for stride in range(1, max(1, present.numel()) + 1):
        chosen = present[::stride]
        if int(capacity[chosen].sum()) <= x.target:
            break
    counts = torch.zeros(t, dtype=torch.int64)
    # One tubelet may still be larger than the budget: pool it (its count is the whole budget).
    counts[chosen] = torch.minimum(capacity[chosen], torch.full_like(capacity[chosen], max(1, x.target // chosen.numel())))
    return Plan(pool_labels(x.pos, counts, h, w))
