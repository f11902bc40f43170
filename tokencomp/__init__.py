"""Visual token compression with preserved positions.

Entry points: `compress(tokens, strategy, budget, signals=None, query=None)` (tokencomp.registry),
`Budget` (tokencomp.budget), and, for codec pre-selection before the encoder,
`tokencomp.strategies.codec.select_cells(signals, grid_thw, budget)`. Strategies register with
`register_strategy(name)`; `list_strategies()` names them. See ARCHITECTURE.md ("Positions: the rules").
"""

from tokencomp.budget import Budget
from tokencomp.registry import compress, get_strategy, list_strategies, register_strategy

__all__ = ["Budget", "compress", "get_strategy", "list_strategies", "register_strategy"]
