"""`divprune`: keep a maximally diverse subset of the tokens (max-min diversity).

Idea: DivPrune (Alvar et al., CVPR 2025): pruning as a Max-Min Diversity Problem, solved greedily:
repeatedly add the token whose smallest cosine distance to the already-kept tokens is largest.
Duplicates (a static background repeated over tubelets) are then kept once. Own code; the greedy
here also honours the per-tubelet floors: once the picks left equal the floors still unmet, only
tubelets below their floor may be picked. Seed: the token farthest from the video's mean
embedding (the most unusual one). Ties go to the earlier row.

Cost: `target` sequential steps of one [N, D] x [D] product each, O(target * N * D); the
benchmark (docs/benchmarks.md, "Compression") shows where that stops being cheap.
"""

from __future__ import annotations

import torch

from tokencomp.plan import Plan
from tokencomp.registry import StrategyInput, register_strategy


def max_min_diverse(embeds: torch.Tensor, tubelet: torch.Tensor, floors: torch.Tensor, k: int) -> torch.Tensor:
    """[N, D], [N] tubelet ids, [T] floors, k -> [min(k, N)] int64 kept rows, ascending."""
    n = embeds.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return torch.zeros(0, dtype=torch.int64)
    dev = embeds.device
    e = torch.nn.functional.normalize(embeds.float(), dim=1)
    tubelet = tubelet.to(dev)
    unmet = floors.to(device=dev, dtype=torch.int64).clone()  # [T] floor still to fill
    chosen = torch.zeros(n, dtype=torch.bool, device=dev)
    mean = e.mean(0, keepdim=True)
    min_dist = 1 - (e @ mean.T).squeeze(1) / mean.norm().clamp_min(1e-6)  # seed score: far from the mean
    picks = []
    for step in range(k):
        left = k - step
        cand = min_dist.masked_fill(chosen, float("-inf"))
        if int(unmet.clamp_min(0).sum()) >= left:
            cand = cand.masked_fill(unmet[tubelet] <= 0, float("-inf"))
        i = int(torch.argmax(cand))  # argmax returns the first maximum: earlier row on ties
        picks.append(i)
        chosen[i] = True
        unmet[tubelet[i]] -= 1
        d = 1 - e @ e[i]
        min_dist = d if step == 0 else torch.minimum(min_dist, d)
    return torch.sort(torch.tensor(picks, dtype=torch.int64)).values


@register_strategy("divprune")
def select_diverse(x: StrategyInput) -> Plan:
    """Keep the `x.target` rows that cover the embedding space best (greedy max-min)."""
    return Plan.keep(max_min_diverse(x.embeds, x.tubelet, x.floors, x.target), x.num_rows)
