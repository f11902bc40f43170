"""`temporal`: drop tokens that repeat the same cell of the previous tubelet.

Idea: Efficient Video Sampling (EVS) in vLLM (`vllm/multimodal/evs.py`, Bagrov et al. 2025):
a token's novelty is 1 - cosine similarity to the token at the same (h, w) in the previous
tubelet, and the budget goes to the most novel tokens of the whole video (global top-k). Own code;
here the top-k also honours the per-tubelet floors of `tokencomp.budget`.

Sparse inputs (after another stage dropped rows): a row is compared with the latest earlier row at
its (h, w). A row with no earlier row at its cell is new content (score 1, like an orthogonal
vector), except in the video's first tubelet, which the scene floor protects: there the score is 0
so the floor, not the score, decides how much of the opening survives.
"""

from __future__ import annotations

import torch

from tokencomp.plan import Plan, select_top
from tokencomp.registry import StrategyInput, register_strategy


def temporal_novelty(embeds: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """[N, D], [N, 3] (t, h, w) -> [N] float32 in [0, 2]: 1 - cos to the previous row at the same cell."""
    n = embeds.shape[0]
    score = torch.zeros(n, dtype=torch.float32)
    if n == 0:
        return score
    pos = pos.cpu()
    g = int(pos.max()) + 1
    order = torch.argsort((pos[:, 1] * g + pos[:, 2]) * g + pos[:, 0], stable=True)  # by cell, then time
    cell = (pos[order, 1] * g + pos[order, 2])
    has_prev = torch.zeros(n, dtype=torch.bool)
    has_prev[1:] = cell[1:] == cell[:-1]
    cur = order[1:][has_prev[1:]]
    prev = order[:-1][has_prev[1:]]
    if cur.numel():
        e = torch.nn.functional.normalize(embeds.float(), dim=1)
        dev = e.device
        cos = (e[cur.to(dev)] * e[prev.to(dev)]).sum(1).cpu()
        score[cur] = (1 - cos).clamp(0, 2)
    no_prev = torch.ones(n, dtype=torch.bool)
    no_prev[cur] = False
    first_t = int(pos[:, 0].min())
    score[no_prev & (pos[:, 0] != first_t)] = 1.0
    return score


@register_strategy("temporal")
def select_novel(x: StrategyInput) -> Plan:
    """Keep the `x.target` most novel rows (per-tubelet floors first, then global top-k)."""
    keep = select_top(temporal_novelty(x.embeds, x.pos), x.tubelet, x.floors, x.target)
    return Plan.keep(keep, x.num_rows)
