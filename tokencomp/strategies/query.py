"""`query`: question-aware selection; keep the visual tokens closest to the question's words.

Idea: text-guided visual token pruning as in SparseVLM (Zhang et al., 2024), where relevant text
tokens rate visual tokens. That method rates with attention inside the LLM; this training-free
variant rates before the LLM, with the question's token embeddings from the LLM's own input
embedding table (same width as the visual tokens, which the merger already maps into the LLM's
input space). Score of a visual token = max over question tokens of the cosine similarity, so a
single relevant word is enough to keep a token. Own code.
"""

from __future__ import annotations

import torch

from encoders.errors import BadRequest
from tokencomp.plan import Plan, select_top
from tokencomp.registry import StrategyInput, register_strategy


def query_scores(embeds: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """[N, D], [Q, D] -> [N] float32 max cosine similarity of each visual token to any query token."""
    if embeds.shape[0] == 0 or query.shape[0] == 0:
        return torch.zeros(embeds.shape[0], dtype=torch.float32)
    e = torch.nn.functional.normalize(embeds.float(), dim=1)
    q = torch.nn.functional.normalize(query.to(embeds.device).float(), dim=1)
    return (e @ q.T).max(dim=1).values.cpu()


@register_strategy("query")
def select_by_query(x: StrategyInput) -> Plan:
    """Keep the `x.target` rows most similar to the question (per-tubelet floors first)."""
    if x.query is None or x.query.shape[0] == 0:
        raise BadRequest("strategy 'query' needs the question's token embeddings: pass query=[Q, D] to compress")
    keep = select_top(query_scores(x.embeds, x.query), x.tubelet, x.floors, x.target)
    return Plan.keep(keep, x.num_rows)
